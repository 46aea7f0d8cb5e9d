"""One test per linearizing rule (docs/export-format.md), on hand-made data."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from soulworker.conversations.conversation import UNTITLED, Conversation, PersonaKind
from soulworker.conversations.derived_ids import DERIVED_ID_PREFIX
from soulworker.conversations.linearize import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DROPPED_CONTENT_TYPES,
    MAX_TITLE_CHARS,
    BadConversation,
    linearize,
    parse_time,
)
from soulworker.conversations.message_text import (
    IMAGE_PLACEHOLDER,
    MIN_MESSAGE_BYTES,
    TRUNCATION_MARKER,
)

Json = dict[str, Any]


def msg(
    role: str,
    text: str | None = None,
    *,
    content: Json | None = None,
    t: float | None = None,
    recipient: str | None = "all",
    metadata: Json | None = None,
    **extra: Any,
) -> Json:
    """An export message; ``text`` becomes a one-part ``text`` content."""
    if content is None:
        content = {"content_type": "text", "parts": [text if text is not None else ""]}
    message: Json = {
        "id": f"m-{role}-{text}",
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": t,
        "content": content,
        "status": "finished_successfully",
        "end_turn": None,
        "weight": 1.0,
        "metadata": metadata if metadata is not None else {},
        "recipient": recipient,
        "channel": None,
        **extra,
    }
    return message


def chain(*messages: Json | None, root: str = "root") -> tuple[Json, str]:
    """A mapping where each message is the child of the previous one; returns it and the leaf."""
    mapping: Json = {root: {"id": root, "message": None, "parent": None, "children": []}}
    parent = root
    for index, message in enumerate(messages):
        node_id = f"n{index}"
        mapping[node_id] = {"id": node_id, "message": message, "parent": parent, "children": []}
        mapping[parent]["children"].append(node_id)
        parent = node_id
    return mapping, parent


def conv(mapping: Json, current: object, **extra: Any) -> Json:
    return {
        "title": "A chat",
        "create_time": 1_700_000_000.5,
        "update_time": 1_700_000_900.25,
        "mapping": mapping,
        "current_node": current,
        "id": "conv-1",
        **extra,
    }


def run(*messages: Json | None, **extra: Any) -> Conversation:
    mapping, leaf = chain(*messages)
    return linearize(conv(mapping, leaf, **extra))


def texts(conversation: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in conversation.messages]


# --- the thread ---------------------------------------------------------------------------


def test_walks_from_current_node_and_ignores_other_branches() -> None:
    mapping, _ = chain(msg("user", "question"), msg("assistant", "first answer"))
    # A regeneration: a sibling answer on another branch, and an edit of the question.
    mapping["regen"] = {
        "id": "regen",
        "parent": "n0",
        "children": [],
        "message": msg("assistant", "second answer"),
    }
    mapping["edit"] = {
        "id": "edit",
        "parent": "root",
        "children": [],
        "message": msg("user", "edited question"),
    }
    result = linearize(conv(mapping, "regen"))
    assert texts(result) == [("user", "question"), ("assistant", "second answer")]
    assert result.stats.start == "current_node"


def test_never_trusts_children_or_mapping_order() -> None:
    mapping, leaf = chain(msg("user", "one"), msg("assistant", "two"), msg("user", "three"))
    for node in mapping.values():
        node["children"] = ["nonsense"]  # children that lie
    del mapping["n1"]["children"]  # and children that are absent
    shuffled = dict(reversed(list(mapping.items())))
    result = linearize(conv(shuffled, leaf))
    assert texts(result) == [("user", "one"), ("assistant", "two"), ("user", "three")]


@pytest.mark.parametrize("current", [None, "no-such-node", 17, ["n1"]], ids=str)
def test_missing_or_dangling_current_node_starts_from_the_newest_leaf(current: object) -> None:
    mapping, _ = chain(msg("user", "question", t=100.0), msg("assistant", "old answer", t=101.0))
    mapping["newer"] = {
        "id": "newer",
        "parent": "n0",
        "message": msg("assistant", "new answer", t=200.0),
    }
    raw = conv(mapping, current)
    if current is None:
        del raw["current_node"]
    result = linearize(raw)
    assert texts(result) == [("user", "question"), ("assistant", "new answer")]
    assert result.stats.start == "newest_leaf"


def test_newest_leaf_ties_go_to_the_deepest_then_the_last_in_the_mapping() -> None:
    # Two leaves with no times: the deeper thread wins, wherever it sits in the mapping.
    mapping, _ = chain(msg("user", "a"), msg("assistant", "b"), msg("user", "c"))
    mapping = {"short": {"parent": "root", "message": msg("user", "abandoned")}, **mapping}
    assert texts(linearize(conv(mapping, None)))[-1] == ("user", "c")
    # Equal depth and time: the leaf listed last wins (ChatGPT appends nodes as created).
    mapping2, _ = chain(msg("user", "q"))
    mapping2["x"] = {"parent": "n0", "message": msg("assistant", "listed first")}
    mapping2["y"] = {"parent": "n0", "message": msg("assistant", "listed last")}
    assert texts(linearize(conv(mapping2, None)))[-1] == ("assistant", "listed last")


def test_a_cycle_is_salvaged_not_followed_forever() -> None:
    mapping = {
        "a": {"parent": "b", "message": msg("user", "from a", t=1.0)},
        "b": {"parent": "a", "message": msg("assistant", "from b", t=2.0)},
    }
    result = linearize(conv(mapping, "a"))
    assert texts(result) == [("assistant", "from b"), ("user", "from a")]
    assert result.stats.cycle
    # Every node on a cycle: no leaf exists, the newest node is the start.
    fallback = linearize(conv(mapping, None))
    assert fallback.stats.start == "newest_leaf"
    assert texts(fallback) == [("user", "from a"), ("assistant", "from b")]


def test_a_self_parent_is_a_cycle() -> None:
    mapping = {"a": {"parent": "a", "message": msg("user", "alone")}}
    result = linearize(conv(mapping, "a"))
    assert texts(result) == [("user", "alone")]
    assert result.stats.cycle


def test_stops_at_a_missing_parent_and_keeps_what_it_collected() -> None:
    mapping, leaf = chain(msg("user", "kept"), msg("assistant", "also kept"))
    mapping["n0"]["parent"] = "deleted-node"
    del mapping["root"]
    result = linearize(conv(mapping, leaf))
    assert texts(result) == [("user", "kept"), ("assistant", "also kept")]
    assert result.stats.missing_parent


# --- dialogue -----------------------------------------------------------------------------


def test_a_missing_recipient_counts_as_all_and_other_recipients_are_tool_calls() -> None:
    result = run(
        msg("user", "hello", recipient=None),
        msg("assistant", "print(1)", recipient="python"),
        msg("assistant", "search query", recipient="web.run"),
        msg("assistant", "answer"),
    )
    assert texts(result) == [("user", "hello"), ("assistant", "answer")]


def test_hidden_messages_are_dropped() -> None:
    result = run(
        msg("user", "visible"),
        msg("user", "hidden", metadata={"is_visually_hidden_from_conversation": True}),
        msg("assistant", "reply"),
    )
    assert texts(result) == [("user", "visible"), ("assistant", "reply")]


def test_tool_and_plain_system_messages_are_dropped() -> None:
    result = run(
        msg("system", "You are ChatGPT"),
        msg("user", "hi"),
        msg("tool", "search results", recipient="all"),
        msg("assistant", "hello"),
    )
    assert texts(result) == [("user", "hi"), ("assistant", "hello")]
    assert result.persona_signals == ()


def test_text_comes_from_string_parts_dict_texts_and_voice_transcriptions() -> None:
    content = {
        "content_type": "multimodal_text",
        "parts": [
            {"content_type": "audio_transcription", "text": "spoken words", "direction": "in"},
            {"content_type": "audio_asset_pointer", "asset_pointer": "sediment://a"},
            "typed words",
            "",
            {"content_type": "image_asset_pointer", "asset_pointer": "file-service://x"},
        ],
    }
    result = run(msg("user", content=content))
    assert texts(result) == [("user", f"spoken words\ntyped words\n{IMAGE_PLACEHOLDER}")]


def test_an_image_only_message_is_a_message() -> None:
    content = {
        "content_type": "multimodal_text",
        "parts": [{"content_type": "image_asset_pointer", "asset_pointer": "sediment://i"}],
    }
    result = run(msg("user", content=content), msg("assistant", "Nice cat."))
    assert texts(result) == [("user", IMAGE_PLACEHOLDER), ("assistant", "Nice cat.")]


def test_citation_markers_are_stripped() -> None:
    answer = (
        "Prices fell in May. \ue200cite\ue202turn0search3\ue202turn0news1\ue201 "
        'Ask \ue200entity\ue202["people","Ada Lovelace","mathematician"]\ue201 about it'
        "【12†source】. See \ue200url\ue202the docs\ue202https://example.org\ue201."
        " \ue203Highlighted\ue204\ue206 text."
    )
    result = run(msg("user", "why?"), msg("assistant", answer))
    assert result.messages[1].text == (
        "Prices fell in May. Ask Ada Lovelace about it. See the docs. Highlighted text."
    )


@pytest.mark.parametrize("content_type", sorted(DROPPED_CONTENT_TYPES))
def test_dropped_content_types_are_not_dialogue(content_type: str) -> None:
    content = {"content_type": content_type, "text": "tool stuff", "parts": ["tool stuff"]}
    result = run(msg("user", "q"), msg("assistant", content=content), msg("assistant", "a"))
    assert texts(result) == [("user", "q"), ("assistant", "a")]
    assert result.stats.unknown_content_types == ()


def test_unknown_content_types_with_text_are_kept_and_counted() -> None:
    result = run(
        msg("user", content={"content_type": "brand_new_thing", "text": "field text"}),
        msg("assistant", content={"content_type": "brand_new_thing", "parts": ["part text"]}),
        msg("user", content={"parts": ["no type at all"]}),
        msg("assistant", content={"content_type": "silent_type", "data": {"x": 1}}),
    )
    assert texts(result) == [
        ("user", "field text"),
        ("assistant", "part text"),
        ("user", "no type at all"),
    ]
    assert result.stats.unknown_content_types == (("(missing)", 1), ("brand_new_thing", 2))


def test_consecutive_assistant_messages_merge_across_dropped_nodes() -> None:
    result = run(
        msg("user", "Find it"),
        msg("assistant", "Let me look.", end_turn=False),
        msg("assistant", "query", recipient="web.run"),
        msg("tool", "results"),
        msg("assistant", "thinking", content={"content_type": "thoughts", "thoughts": []}),
        msg("assistant", "hidden", metadata={"is_visually_hidden_from_conversation": True}),
        msg("assistant", "Found it."),
        msg("user", "Thanks"),
        msg("user", "Really"),
    )
    assert texts(result) == [
        ("user", "Find it"),
        ("assistant", "Let me look.\n\nFound it."),
        ("user", "Thanks"),
        ("user", "Really"),  # user messages are never merged
    ]
    assert result.stats.merged_messages == 1


@pytest.mark.parametrize("finish_type", ["max_tokens", "interrupted"])
def test_a_cut_off_answer_joins_its_continuation_directly(finish_type: str) -> None:
    result = run(
        msg("user", "Tell me"),
        msg(
            "assistant",
            "The answer is forty-",
            t=10.0,
            metadata={"finish_details": {"type": finish_type}},
        ),
        msg("assistant", "two, as everyone knows.", t=20.0),
    )
    assert result.messages[1].text == "The answer is forty-two, as everyone knows."
    assert result.messages[1].create_time == 10.0


# --- persona signals ----------------------------------------------------------------------


def test_custom_instructions_are_a_signal_with_chatgpts_wrapper_removed() -> None:
    profile = (
        "The user provided the following information about themselves. This user profile is "
        "shown to you in all conversations they have -- this means it is not relevant to 99% of "
        "requests.\nUser profile:\n```Preferred name: Sam\nRole: baker\n```"
    )
    instructions = (
        "The user provided the additional info about how they would like you to respond:\n"
        "```Follow the instructions below naturally, without repeating, referencing, echoing, "
        "or mirroring any of their wording!\n\nBe brief.```"
    )
    context = msg(
        "user",
        content={
            "content_type": "user_editable_context",
            "user_profile": profile,
            "user_instructions": instructions,
        },
        metadata={"is_visually_hidden_from_conversation": True, "is_user_system_message": True},
    )
    result = run(context, msg("user", "hi"), msg("assistant", "hello"))
    assert texts(result) == [("user", "hi"), ("assistant", "hello")]
    [signal] = result.persona_signals
    assert signal.kind is PersonaKind.CUSTOM_INSTRUCTIONS
    assert signal.text == (
        "About the user:\nPreferred name: Sam\nRole: baker\n\n"
        "How the user wants answers:\nBe brief."
    )
    assert signal.time == 1_700_000_000.5  # no time of its own: the conversation's


def test_custom_instructions_prefer_the_bare_texts_in_metadata() -> None:
    context = msg(
        "user",
        content={"content_type": "user_editable_context", "user_profile": "wrapped profile"},
        metadata={"user_context_message_data": {"about_user_message": "I fly kites."}},
        t=50.0,
    )
    [signal] = run(context).persona_signals
    assert (signal.text, signal.time) == ("About the user:\nI fly kites.", 50.0)


def test_memory_writes_and_snapshots_are_signals_not_dialogue() -> None:
    result = run(
        msg("user", "I moved to Oslo"),
        msg("assistant", "User lives in Oslo.", recipient="bio", t=5.0),
        msg("tool", "Model set context updated."),
        msg(
            "assistant",
            content={
                "content_type": "model_editable_context",
                "model_set_context": "1. [2024-01-01]. Likes tea.",
            },
        ),
        msg("assistant", "Noted!"),
    )
    assert texts(result) == [("user", "I moved to Oslo"), ("assistant", "Noted!")]
    kinds = [(s.kind, s.text) for s in result.persona_signals]
    assert kinds == [
        (PersonaKind.MEMORY_WRITE, "User lives in Oslo."),
        (PersonaKind.MEMORY_SNAPSHOT, "1. [2024-01-01]. Likes tea."),
    ]


def test_user_system_messages_are_profile_signals_and_placeholders_are_ignored() -> None:
    flagged = {"is_user_system_message": True}
    result = run(
        msg("system", "Call me Captain.", metadata=flagged),
        msg(
            "user",
            "Original custom instructions no longer available",
            metadata={**flagged, "is_visually_hidden_from_conversation": True},
        ),
        msg(
            "system",
            "",
            metadata={
                **flagged,
                "user_context_message_data": {"about_model_message": "Use metric units."},
            },
        ),
        msg("user", "hi"),
    )
    assert [(s.kind, s.text) for s in result.persona_signals] == [
        (PersonaKind.SYSTEM_PROFILE, "Call me Captain."),
        (PersonaKind.CUSTOM_INSTRUCTIONS, "How the user wants answers:\nUse metric units."),
    ]
    assert texts(result) == [("user", "hi")]


# --- sizes and cleaning -------------------------------------------------------------------


def test_a_message_over_the_byte_limit_is_truncated_on_a_character_boundary() -> None:
    limit = MIN_MESSAGE_BYTES
    long_text = "😀" * limit  # 4 bytes each: the cut must not split one
    mapping, leaf = chain(msg("user", long_text), msg("assistant", "short"))
    result = linearize(conv(mapping, leaf), max_message_bytes=limit)
    text = result.messages[0].text
    assert text.endswith(TRUNCATION_MARKER)
    assert len(text.encode("utf-8")) <= limit
    assert set(text.removesuffix(TRUNCATION_MARKER)) == {"😀"}
    assert result.stats.truncated_messages == 1
    assert result.messages[1].text == "short"


def test_merged_parts_are_truncated_as_one_message() -> None:
    part = "a" * 800
    mapping, leaf = chain(msg("assistant", part), msg("assistant", part))
    result = linearize(conv(mapping, leaf), max_message_bytes=MIN_MESSAGE_BYTES)
    assert len(result.messages) == 1
    assert len(result.messages[0].text.encode()) <= MIN_MESSAGE_BYTES
    assert result.stats.truncated_messages == 1


def test_the_default_limit_is_the_designs() -> None:
    assert DEFAULT_MAX_MESSAGE_BYTES == 1024 * 1024
    with pytest.raises(ValueError, match="max_message_bytes"):
        linearize({}, max_message_bytes=MIN_MESSAGE_BYTES - 1)


def test_text_is_made_storable() -> None:
    result = run(msg("user", "nul\x00byte and lone \ud800 surrogate and pair \ud83d\ude00"))
    assert result.messages[0].text == "nulbyte and lone \ufffd surrogate and pair 😀"
    result.messages[0].text.encode("utf-8")  # would raise on a surrogate


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        (None, UNTITLED),
        ("   ", UNTITLED),
        (True, UNTITLED),
        ([1], UNTITLED),
        (42, "42"),
        ("Two\nlines\t here", "Two lines here"),
    ],
    ids=repr,
)
def test_titles(title: object, expected: str) -> None:
    assert run(msg("user", "x"), title=title).title == expected


def test_a_huge_title_is_capped() -> None:
    title = run(msg("user", "x"), title="word " * 1000).title
    assert len(title) <= MAX_TITLE_CHARS
    assert title.endswith("…")


def test_an_absent_title_is_untitled() -> None:
    mapping, leaf = chain(msg("user", "x"))
    raw = conv(mapping, leaf)
    del raw["title"]
    assert linearize(raw).title == UNTITLED


# --- ids, bad conversations, odd shapes ---------------------------------------------------


def test_ids_come_from_id_then_conversation_id_then_the_content() -> None:
    mapping, leaf = chain(msg("user", "x"))
    raw = conv(mapping, leaf)
    del raw["id"]
    raw["conversation_id"] = "from-conversation-id"
    assert linearize(raw).id == "from-conversation-id"
    raw["conversation_id"] = 12345
    assert linearize(raw).id == "12345"
    raw["conversation_id"] = "bad\x00id"  # unusable: treated like no id at all
    derived = linearize(raw).id
    assert derived.startswith(DERIVED_ID_PREFIX)
    del raw["conversation_id"]
    assert linearize(raw).id == derived, "the same conversation gets the same id every time"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ([], "not_an_object"),
        ("text", "not_an_object"),
        (None, "not_an_object"),
        ({"id": "c", "mapping": []}, "bad_mapping"),
        ({"id": "c", "mapping": "x"}, "bad_mapping"),
    ],
    ids=repr,
)
def test_what_is_not_a_conversation_raises_bad_conversation(raw: object, code: str) -> None:
    with pytest.raises(BadConversation) as caught:
        linearize(raw)
    assert caught.value.code == code


def test_damaged_nodes_are_skipped_and_the_rest_salvaged() -> None:
    mapping, leaf = chain(
        msg("user", "good one"),
        None,
        msg("assistant", content={"content_type": "text", "parts": "not a list"}),
        msg("user", content={"content_type": "text", "parts": [None, 7, {"x": 1}, "ok"]}),
        msg("assistant", "content replaced by null below"),
        msg("assistant", content={"content_type": ["not", "a", "string"], "parts": ["odd"]}),
        msg("user", "timeless", t=math.nan),
        msg("user", "endless", t=math.inf),
    )
    mapping["n1"]["message"] = "a string instead of a message"
    mapping["n4"]["message"]["content"] = None
    mapping["n3"]["message"]["author"] = {"role": "user", "name": ["odd"]}
    mapping["n5"]["message"]["metadata"] = ["not", "an", "object"]
    mapping["n5"]["message"]["recipient"] = None
    result = linearize(conv(mapping, leaf, create_time="yesterday", update_time=math.nan))
    assert texts(result) == [
        ("user", "good one"),
        ("assistant", "not a list"),
        ("user", "ok"),
        ("assistant", "odd"),
        ("user", "timeless"),
        ("user", "endless"),
    ]
    assert result.create_time is None
    assert result.update_time is None
    assert result.messages[-1].create_time is None
    assert result.stats.unknown_content_types == (("(invalid)", 1),)


def test_a_node_that_is_not_an_object_ends_the_walk_like_a_missing_parent() -> None:
    mapping, leaf = chain(msg("user", "before"), msg("assistant", "after"))
    mapping["n0"] = ["not", "a", "node"]
    result = linearize(conv(mapping, leaf))
    assert texts(result) == [("assistant", "after")]
    assert result.stats.missing_parent


def test_ints_where_strings_belong_are_not_a_crash() -> None:
    """JSON keys are always strings, but hand-built dicts are not JSON: still no exception."""
    tied = {"message": msg("user", "int keyed")}
    raw = {"id": 5, "title": 7, "mapping": {1: tied, 2: dict(tied)}, "current_node": 1.5}
    result = linearize(raw)
    assert result.id == "5"
    assert result.title == "7"
    assert texts(result) == [("user", "int keyed")]
    mapping, leaf = chain(msg("user", "cut off"), msg("assistant", "kept"))
    mapping[leaf]["parent"] = 0  # an int parent ends the walk like a root
    assert texts(linearize(conv(mapping, leaf))) == [("assistant", "kept")]


def test_a_conversation_with_a_messages_list_and_no_mapping() -> None:
    raw = {
        "id": "listed",
        "title": "Old tool",
        "messages": [
            {"role": "user", "content": "plain question", "create_time": 3.0},
            {"role": "assistant", "text": "plain answer"},
            msg("assistant", "export-shaped continuation"),
            {"role": "system", "content": "system prompt"},
            "junk",
        ],
    }
    result = linearize(raw)
    assert texts(result) == [
        ("user", "plain question"),
        ("assistant", "plain answer\n\nexport-shaped continuation"),
    ]
    assert result.stats.start == "messages_list"
    assert result.messages[0].create_time == 3.0


def test_no_dialogue_gives_a_conversation_without_messages() -> None:
    no_mapping = linearize({"id": "empty", "title": "Nothing"})
    assert no_mapping.messages == ()
    assert no_mapping.stats.start == "none"
    only_tools = run(msg("assistant", "q", recipient="python"), msg("tool", "out"))
    assert only_tools.messages == ()
    empty_mapping = linearize({"id": "e", "mapping": {}, "current_node": "x"})
    assert empty_mapping.messages == ()
    assert empty_mapping.stats.start == "none"


def test_an_unforeseen_failure_is_reported_as_bad_without_its_message() -> None:
    class Exploding(dict[str, Any]):
        def values(self) -> Any:
            raise RuntimeError("secret conversation text")

    raw = {"id": "c", "mapping": Exploding(a={"parent": None}), "current_node": None}
    with pytest.raises(BadConversation) as caught:
        linearize(raw)
    assert caught.value.code == "unexpected"
    assert caught.value.cause_type == "RuntimeError"
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, 1.5),
        (7, 7.0),
        (True, None),
        ("1700000000", None),
        (math.nan, None),
        (-math.inf, None),
        (math.inf, None),
        (0, None),
        (-5.0, None),
        (10**400, None),
        (1e300, None),
        (None, None),
    ],
    ids=repr,
)
def test_times(value: object, expected: float | None) -> None:
    assert parse_time(value) == expected


def test_a_realistic_modern_conversation() -> None:
    """A 2025-shaped conversation: client root, hidden system nodes, custom instructions,
    reasoning, a web search with citations, and a regenerated answer."""
    raw = json.loads(
        json.dumps(
            {
                "title": "Trip planning",
                "create_time": 1767747369.834492,
                "update_time": 1767920134.581268,
                "id": "695daeff-5c24",
                "current_node": "final",
                "mapping": {
                    "sys": {
                        "id": "sys",
                        "parent": "client-created-root",
                        "message": msg(
                            "system", "", metadata={"is_visually_hidden_from_conversation": True}
                        ),
                    },
                    "client-created-root": {
                        "id": "client-created-root",
                        "message": None,
                        "parent": None,
                    },
                    "ctx": {
                        "id": "ctx",
                        "parent": "sys",
                        "message": msg(
                            "user",
                            content={
                                "content_type": "user_editable_context",
                                "user_profile": "I live in Lyon.",
                                "user_instructions": "",
                            },
                            metadata={
                                "is_visually_hidden_from_conversation": True,
                                "is_user_system_message": True,
                            },
                        ),
                    },
                    "q": {
                        "id": "q",
                        "parent": "ctx",
                        "message": msg("user", "Best time to visit Kyoto?", t=1767747369.5),
                    },
                    "think": {
                        "id": "think",
                        "parent": "q",
                        "message": msg(
                            "assistant",
                            content={
                                "content_type": "thoughts",
                                "thoughts": [{"summary": "s", "content": "private"}],
                            },
                        ),
                    },
                    "recap": {
                        "id": "recap",
                        "parent": "think",
                        "message": msg(
                            "assistant",
                            content={
                                "content_type": "reasoning_recap",
                                "content": "Thought for 4s",
                            },
                        ),
                    },
                    "call": {
                        "id": "call",
                        "parent": "recap",
                        "message": msg(
                            "assistant",
                            content={"content_type": "code", "text": "search('kyoto')"},
                            recipient="web.run",
                        ),
                    },
                    "page": {
                        "id": "page",
                        "parent": "call",
                        "message": msg(
                            "tool", content={"content_type": "sonic_webpage", "text": "page text"}
                        ),
                    },
                    "old": {
                        "id": "old",
                        "parent": "page",
                        "message": msg(
                            "assistant",
                            "Spring. \ue200cite\ue202turn0search0\ue201",
                            t=1767747400.0,
                        ),
                    },
                    "final": {
                        "id": "final",
                        "parent": "page",
                        "message": msg(
                            "assistant",
                            "Autumn or spring.\ue200cite\ue202turn0search1\ue201",
                            t=1767747500.0,
                            channel="final",
                        ),
                    },
                },
            }
        )
    )
    result = linearize(raw)
    assert texts(result) == [
        ("user", "Best time to visit Kyoto?"),
        ("assistant", "Autumn or spring."),
    ]
    assert [(s.kind, s.text) for s in result.persona_signals] == [
        (PersonaKind.CUSTOM_INSTRUCTIONS, "About the user:\nI live in Lyon.")
    ]
    assert result.stats.path_length == 9
    assert result.stats.mapping_size == 10


@pytest.mark.parametrize("realistic_extras", [False, True], ids=["defaults", "real-export-traits"])
def test_generated_conversations_linearize_to_their_recorded_facts(
    realistic_extras: bool,
) -> None:
    """Smoke test over the project's export generator: dialogue, order, dropped and hidden
    text, and persona signals all match what the generator recorded. With the traits of real
    exports turned on: Canvas documents exactly, no false image for voice, no marker left."""
    from soulworker.testing.export_generator import Feature, GeneratorConfig, iter_export

    rates = {}
    if realistic_extras:
        rates = {
            Feature.CANVAS: 0.3,
            Feature.HIGHLIGHTS: 0.3,
            Feature.VOICE: 0.2,
            Feature.VOICE_VIDEO: 0.3,
            Feature.MISSING_ID: 0.2,
        }
    config = GeneratorConfig(seed=11, conversations=120, rates=rates)
    seen_custom = seen_bio = 0
    for item in iter_export(config):
        facts = item.facts
        result = linearize(item.data)
        assert [m.role for m in result.messages] == [m.role for m in facts.messages]
        assert result.id == facts.id if facts.has_id else result.id.startswith("derived-")
        assert [m.text for m in result.messages if m.text.startswith("[canvas: ")] == list(
            facts.canvas_documents
        )
        assert result.stats.canvas_updates_not_applied == 0
        for ours, expected in zip(result.messages, facts.messages, strict=True):
            assert ours.text.count(IMAGE_PLACEHOLDER) == expected.parts.count(IMAGE_PLACEHOLDER)
            position = 0
            for part in expected.parts:
                found = ours.text.find(part.strip(), position)
                assert found >= 0, "every recorded part, in order"
                position = found + len(part.strip())
        dialogue = "\n".join(m.text for m in result.messages)
        assert not [t for t in facts.dead_texts if t.strip() in dialogue]
        assert not [t for t in facts.hidden_texts if t.strip() in dialogue]
        signals = {(s.kind, s.text) for s in result.persona_signals}
        for fact in facts.bio_writes:
            if fact in facts.hidden_texts:  # written on the visible thread, not a dead branch
                assert (PersonaKind.MEMORY_WRITE, fact) in signals
                seen_bio += 1
        if facts.custom_instructions is not None:
            [instructions] = [t for k, t in signals if k is PersonaKind.CUSTOM_INSTRUCTIONS]
            assert facts.custom_instructions.about_user in instructions
            assert facts.custom_instructions.about_model in instructions
            seen_custom += 1
        assert dict(result.stats.unknown_content_types).keys() == set(facts.unknown_content_types)
    assert seen_custom
    assert seen_bio
