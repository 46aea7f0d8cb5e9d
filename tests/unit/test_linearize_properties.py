"""Property tests: the linearizer survives any JSON, in bounded time, and loses no dialogue."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soulworker.conversations.citations import MARKER_CHARACTERS
from soulworker.conversations.conversation import Conversation
from soulworker.conversations.linearize import BadConversation, linearize
from soulworker.conversations.message_text import MIN_MESSAGE_BYTES

EXPECTED_BAD_CODES = {"not_an_object", "bad_mapping"}
"""``unexpected`` is not among them: reaching it means a rule missed an input shape."""

PER_EXAMPLE = settings(
    deadline=timedelta(milliseconds=500),  # each example is bounded in time: no hang, no blow-up
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Characters that exercise every cleaning rule: markers, NULs, surrogates, whitespace.
TRICKY_CHARS = list('ab .\n\x00\ud800\udc00😀é\ue200\ue201\ue202\ue203\u3010\u3011\u2020cite[]"')
TRICKY = st.text(alphabet=st.sampled_from(TRICKY_CHARS), max_size=30)
IDS = st.sampled_from(["root", "a", "b", "c", "d", "e", "f", ""])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TRICKY,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` seven times in eight, any JSON value otherwise: damage at every level, but
    rare enough at each that whole conversations with dialogue are common too."""
    # (one_of with a repeated branch does not weight it; a uniform pick of 1 in 8 does)
    return st.sampled_from(range(8)).flatmap(lambda pick: JUNK if pick == 7 else valid)


TIMES = mostly(st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers())
ROLES = mostly(st.sampled_from(["user", "assistant", "user", "assistant", "system", "tool"]))
RECIPIENTS = mostly(
    st.sampled_from(
        [
            "all",
            "all",
            "all",
            "bio",
            "python",
            None,
            "canmore.create_textdoc",
            "canmore.update_textdoc",
        ]
    )
)
CONTENT_TYPES = mostly(
    st.sampled_from(
        [
            "text",
            "text",
            "multimodal_text",
            "thoughts",
            "code",
            "user_editable_context",
            "model_editable_context",
            "brand_new",
        ]
    )
)
WORDS = st.text(alphabet=st.sampled_from("abc ."), min_size=1, max_size=20)
PATTERNS = st.sampled_from([".*", "a", "a.*?b", "(a+)+$", "(", "\\Z", "b|c", "", "(?=a)"])
# Canvas call arguments: a create, an update, or JSON of the wrong shape.
CANVAS_ARGUMENTS = st.builds(
    json.dumps,
    st.fixed_dictionaries({}, optional={"name": mostly(TRICKY), "content": mostly(TRICKY)})
    | st.fixed_dictionaries(
        {
            "updates": mostly(
                st.lists(
                    mostly(
                        st.fixed_dictionaries(
                            {"pattern": mostly(PATTERNS), "replacement": mostly(TRICKY)},
                            optional={"multiple": mostly(st.booleans())},
                        )
                    ),
                    max_size=3,
                )
            )
        }
    ),
)
PART = mostly(
    WORDS
    | TRICKY
    | CANVAS_ARGUMENTS
    | st.fixed_dictionaries(
        {
            "content_type": mostly(
                st.sampled_from(
                    [
                        "image_asset_pointer",
                        "audio_transcription",
                        "audio_asset_pointer",
                        "real_time_user_audio_video_asset_pointer",
                    ]
                )
            )
        },
        optional={
            "text": mostly(TRICKY),
            "asset_pointer": TRICKY,
            "frames_asset_pointers": JUNK,
            "video_container_asset_pointer": JUNK,
        },
    )
)
CONTENTS = mostly(
    st.fixed_dictionaries(
        {"content_type": CONTENT_TYPES, "parts": mostly(st.lists(PART, min_size=1, max_size=4))},
        optional={
            "text": mostly(TRICKY),
            "user_profile": mostly(TRICKY),
            "model_set_context": mostly(TRICKY),
        },
    )
)
METADATA = mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "is_visually_hidden_from_conversation": mostly(st.booleans()),
            "is_user_system_message": mostly(st.booleans()),
            "finish_details": mostly(
                st.fixed_dictionaries({"type": mostly(st.sampled_from(["max_tokens", "stop"]))})
            ),
            "user_context_message_data": mostly(
                st.fixed_dictionaries({}, optional={"about_user_message": mostly(TRICKY)})
            ),
        },
    )
)
MESSAGES = mostly(
    st.fixed_dictionaries(
        {
            "author": mostly(st.fixed_dictionaries({"role": ROLES})),
            "content": CONTENTS,
            "recipient": RECIPIENTS,
        },
        optional={"create_time": TIMES, "metadata": METADATA, "end_turn": mostly(st.booleans())},
    )
)
NODES = mostly(
    st.fixed_dictionaries(
        {"message": MESSAGES, "parent": mostly(IDS | st.none())},
        optional={"children": JUNK},
    )
)
CONVERSATIONS = mostly(
    st.fixed_dictionaries(
        {
            "id": mostly(st.sampled_from(["c1", "c2"])),
            "mapping": mostly(st.dictionaries(IDS, NODES, max_size=10)),
            "current_node": mostly(IDS),
        },
        optional={
            "conversation_id": JUNK,
            "title": mostly(TRICKY),
            "create_time": TIMES,
            "update_time": TIMES,
            "messages": mostly(st.lists(MESSAGES, max_size=4)),
        },
    )
)


def check_invariants(result: Conversation) -> None:
    for message in result.messages:
        assert message.role in ("user", "assistant")
        assert message.text
        assert message.text == message.text.strip()
        assert "\x00" not in message.text
        assert not any(char in message.text for char in MARKER_CHARACTERS)
        message.text.encode("utf-8")  # no lone surrogates
    for signal in result.persona_signals:
        assert signal.text
        signal.text.encode("utf-8")
    assert result.title
    assert "\n" not in result.title
    assert result.stats.path_length <= result.stats.mapping_size


def linearize_or_bad(raw: object) -> Conversation | None:
    try:
        result = linearize(raw, max_message_bytes=MIN_MESSAGE_BYTES)
    except BadConversation as bad:
        code = bad.code
    else:
        check_invariants(result)
        return result
    assert code in EXPECTED_BAD_CODES
    return None


@PER_EXAMPLE
@given(CONVERSATIONS)
def test_any_shape_gives_a_valid_conversation_or_the_documented_exception(raw: object) -> None:
    linearize_or_bad(raw)


@PER_EXAMPLE
@given(st.lists(MESSAGES, min_size=1, max_size=10), st.booleans())
def test_damaged_messages_on_a_sound_thread(messages: list[Any], from_leaf: bool) -> None:
    """The same damage, on a well-formed chain, so that most examples carry dialogue."""
    mapping: dict[str, Any] = {"root": {"parent": None, "message": None}}
    parent = "root"
    for index, message in enumerate(messages):
        mapping[f"n{index}"] = {"parent": parent, "message": message}
        parent = f"n{index}"
    current = parent if from_leaf else None
    linearize_or_bad({"id": "thread", "mapping": mapping, "current_node": current})


@PER_EXAMPLE
@given(
    fan_out=st.integers(min_value=0, max_value=3000),
    depth=st.integers(min_value=0, max_value=3000),
    loop_back=st.booleans(),
    current=st.sampled_from(["leaf-0", "deep-last", "missing", None]),
)
def test_huge_fan_out_deep_chains_and_long_cycles_finish(
    fan_out: int, depth: int, loop_back: bool, current: str | None
) -> None:
    mapping: dict[str, Any] = {"root": {"parent": None, "message": None}}
    for index in range(fan_out):  # a root with thousands of children, all leaves
        mapping[f"leaf-{index}"] = {"parent": "root", "message": None}
    parent = "root"
    for index in range(depth):  # and one long thread
        node_id = "deep-last" if index == depth - 1 else f"deep-{index}"
        role = "user" if index % 2 else "assistant"
        mapping[node_id] = {
            "parent": parent,
            "message": {"author": {"role": role}, "content": {"parts": [f"m{index}"]}},
        }
        parent = node_id
    if loop_back and depth:
        mapping["root"]["parent"] = "deep-last"  # the whole thread becomes one cycle
    result = linearize_or_bad({"id": "big", "mapping": mapping, "current_node": current})
    assert result is not None


# Text without markers or edge whitespace, so the expected output can be computed directly.
PLAIN = st.text(alphabet=st.sampled_from(list("abc xyz.?!\n")), min_size=0, max_size=40)


@PER_EXAMPLE
@given(
    turns=st.lists(st.tuples(st.sampled_from(["user", "assistant"]), PLAIN), max_size=12),
    order=st.randoms(use_true_random=False),
)
def test_a_plain_thread_loses_no_dialogue_and_ignores_mapping_order(
    turns: list[tuple[str, str]], order: Any
) -> None:
    mapping: dict[str, Any] = {"root": {"parent": None, "message": None}}
    parent = "root"
    for index, (role, text) in enumerate(turns):
        mapping[f"n{index}"] = {
            "parent": parent,
            "message": {
                "author": {"role": role},
                "recipient": "all",
                "content": {"content_type": "text", "parts": [text]},
            },
        }
        parent = f"n{index}"
    items = list(mapping.items())
    order.shuffle(items)

    result = linearize({"id": "c", "mapping": dict(items), "current_node": parent})

    expected: list[tuple[str, str]] = []
    for role, text in turns:
        if not text.strip():
            continue
        if role == "assistant" and expected and expected[-1][0] == "assistant":
            expected[-1] = ("assistant", expected[-1][1] + "\n\n" + text)
        else:
            expected.append((role, text))
    assert [(m.role, m.text) for m in result.messages] == [(r, t.strip()) for r, t in expected]
