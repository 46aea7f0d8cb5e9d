"""The details real exports taught us (docs/export-format.md): voice turns, markers in every
message, Canvas documents, and conversations without an id. Shapes follow real exports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from soulworker.conversations.canvas import CALL_UNITS, CANVAS_WORK_UNITS
from soulworker.conversations.citations import MARKER_CHARACTERS
from soulworker.conversations.conversation import Conversation
from soulworker.conversations.derived_ids import DERIVED_ID_PREFIX
from soulworker.conversations.linearize import linearize
from soulworker.conversations.message_text import IMAGE_PLACEHOLDER, TRUNCATION_MARKER
from tests.unit.test_linearize import chain, conv, msg, run, texts

Json = dict[str, Any]


# --- voice ---------------------------------------------------------------------------------


def audio_pointer() -> Json:
    return {
        "asset_pointer": "sediment://file_00000000f51c61f6b75443c56cb254e7",
        "content_type": "audio_asset_pointer",
        "expiry_datetime": "2025-11-29T23:43:10.402104+00:00",
        "format": "wav",
        "metadata": {"end": 2.62, "start": 0.0, "transcription": None},
        "size_bytes": 125838,
        "tool_audio_direction": None,
    }


def real_time_pointer(frames: object = (), video: object = None) -> Json:
    return {
        "audio_asset_pointer": audio_pointer(),
        "audio_start_timestamp": 11.66,
        "content_type": "real_time_user_audio_video_asset_pointer",
        "expiry_datetime": "2025-11-29T23:43:10.402104+00:00",
        "frames_asset_pointers": list(frames) if isinstance(frames, tuple) else frames,
        "video_container_asset_pointer": video,
    }


def voice(role: str, words: str, *parts: Json) -> Json:
    transcription = {
        "content_type": "audio_transcription",
        "text": words,
        "direction": "in" if role == "user" else "out",
        "decoding_id": None,
    }
    content = {"content_type": "multimodal_text", "parts": [transcription, *parts]}
    return msg(role, content=content, metadata={"voice_mode_message": True})


def test_a_voice_turn_is_its_transcription_without_a_false_image() -> None:
    result = run(
        voice("user", "First of all, what model are you using?", real_time_pointer()),
        voice("assistant", "Right now I'm using GPT-4o.", audio_pointer()),
    )
    assert texts(result) == [
        ("user", "First of all, what model are you using?"),
        ("assistant", "Right now I'm using GPT-4o."),
    ]


@pytest.mark.parametrize(
    "pointer",
    [
        real_time_pointer(frames=["sediment://file_frame_1", "sediment://file_frame_2"]),
        real_time_pointer(frames=[{"asset_pointer": "sediment://file_frame_1"}]),
        real_time_pointer(video="sediment://file_video"),
        real_time_pointer(video={"asset_pointer": "sediment://file_video"}),
    ],
    ids=["frame-strings", "frame-records", "video-string", "video-record"],
)
def test_a_voice_turn_with_real_video_shows_the_image_placeholder(pointer: Json) -> None:
    result = run(voice("user", "Look at this.", pointer))
    assert texts(result) == [("user", f"Look at this.\n{IMAGE_PLACEHOLDER}")]


@pytest.mark.parametrize(
    "pointer",
    [
        real_time_pointer(frames=None),
        real_time_pointer(frames={}),
        real_time_pointer(frames=""),
        real_time_pointer(video=""),
        {"content_type": "real_time_user_audio_video_asset_pointer"},
    ],
    ids=["null-frames", "empty-map", "empty-string", "empty-video", "bare"],
)
def test_empty_or_absent_video_fields_are_audio(pointer: Json) -> None:
    assert texts(run(voice("user", "Hello.", pointer))) == [("user", "Hello.")]


def test_a_voice_turn_with_an_empty_transcription_is_not_a_message() -> None:
    result = run(voice("user", "", real_time_pointer()), msg("assistant", "Sorry?"))
    assert texts(result) == [("assistant", "Sorry?")]


# --- markers ---------------------------------------------------------------------------------


def test_markers_are_removed_in_every_message_with_or_without_a_citation() -> None:
    result = run(
        msg("user", "Tell me about \ue203Paris\ue204\ue206 please"),
        msg("assistant", "\ue203Paris is the capital of France.\ue204\ue206 It is large."),
        msg("user", 'And \ue200entity\ue202["city","Lyon",""]\ue201?'),
        msg(
            "assistant",
            "Lyon is third.\ue200cite\ue202turn0search1\ue201 \ue203Food is good.\ue204\ue206",
        ),
    )
    assert texts(result) == [
        ("user", "Tell me about Paris please"),
        ("assistant", "Paris is the capital of France. It is large."),
        ("user", "And Lyon?"),
        ("assistant", "Lyon is third. Food is good."),
    ]


# --- Canvas ----------------------------------------------------------------------------------


def create_call(name: str, content: str, *, code: bool = False, **extra: Any) -> Json:
    arguments = json.dumps({"name": name, "type": "document", "content": content, **extra})
    body: Json = (
        {"content_type": "code", "language": "json", "text": arguments}
        if code
        else {"content_type": "text", "parts": [arguments]}
    )
    return msg("assistant", content=body, recipient="canmore.create_textdoc")


def update_call(*updates: Json, raw: str | None = None) -> Json:
    arguments = raw if raw is not None else json.dumps({"updates": list(updates)})
    body = {"content_type": "code", "language": "json", "text": arguments}
    return msg("assistant", content=body, recipient="canmore.update_textdoc")


def edit(pattern: str, replacement: str, multiple: bool | None = None) -> Json:
    update: Json = {"pattern": pattern, "replacement": replacement}
    if multiple is not None:
        update["multiple"] = multiple
    return update


def reply(call: str, textdoc_id: str | None, *, failed: bool = False, title: str = "") -> Json:
    if failed:
        text = (
            "Failed with error. Fix the error and try again before replying to the user.\n\n"
            "updates.0.pattern: pattern not found in the document: /x/"
        )
    elif call.endswith("create_textdoc"):
        text = (
            f"Successfully created text document '{title}' which will be referenced in all "
            f"future messages with the unique identifier textdoc_id: '{textdoc_id}'"
        )
    else:
        text = f"Successfully updated text document with textdoc_id '{textdoc_id}'"
    metadata: Json = {}
    if textdoc_id is not None and not failed:
        metadata["canvas"] = {
            "textdoc_id": textdoc_id,
            "textdoc_type": "document",
            "title": title,
            "version": 1,
            "create_source": "system_hint_canvas",
        }
    message = msg("tool", text, recipient="all", metadata=metadata)
    message["author"]["name"] = call
    return message


CREATED = "canmore.create_textdoc"
UPDATED = "canmore.update_textdoc"


def canvas_messages(result: Conversation) -> list[str]:
    return [m.text for m in result.messages if m.text.startswith("[canvas: ")]


def test_a_created_then_updated_document_is_kept_once_with_its_final_text() -> None:
    result = run(
        msg("user", "Write me a short story."),
        msg("assistant", "Here is a first draft."),
        create_call("cat_story", "The cat sat.\nThe end."),
        reply(CREATED, "doc1", title="Cat Story"),
        msg("assistant", "I drafted it in the canvas."),
        msg("user", "Make the cat stand."),
        update_call(edit("sat", "stood")),
        reply(UPDATED, "doc1"),
        msg("assistant", "Done."),
        msg("user", "Thanks!"),
    )
    assert texts(result) == [
        ("user", "Write me a short story."),
        # The document moved to where it was last written: the answers around its creation
        # are adjacent again, and merge as any continued answer does.
        ("assistant", "Here is a first draft.\n\nI drafted it in the canvas."),
        ("user", "Make the cat stand."),
        ("assistant", "[canvas: cat_story]\nThe cat stood.\nThe end."),
        ("assistant", "Done."),
        ("user", "Thanks!"),
    ]
    assert result.stats.canvas_documents == 1
    assert result.stats.canvas_updates_not_applied == 0


def test_a_whole_rewrite_replaces_the_text_and_the_old_text_is_gone() -> None:
    result = run(
        msg("user", "Code please."),
        create_call("app.py", "print('v1')", code=True),
        reply(CREATED, "d"),
        msg("user", "v2"),
        update_call(edit(".*", "print('v2')\nprint('more')", multiple=False)),
        reply(UPDATED, "d"),
    )
    assert canvas_messages(result) == ["[canvas: app.py]\nprint('v2')\nprint('more')"]
    assert "v1" not in "\n".join(m.text for m in result.messages)


def test_updates_follow_the_document_their_reply_names() -> None:
    result = run(
        msg("user", "Two docs."),
        create_call("one", "alpha"),
        reply(CREATED, "d1"),
        create_call("two", "beta"),
        reply(CREATED, "d2"),
        msg("user", "Change the first."),
        update_call(edit("alpha", "ALPHA")),  # the current document is "two", the reply says d1
        reply(UPDATED, "d1"),
    )
    # "two" was last written at its creation, "one" by the later update.
    assert canvas_messages(result) == ["[canvas: two]\nbeta", "[canvas: one]\nALPHA"]


def test_without_replies_an_update_goes_to_the_document_written_last() -> None:
    result = run(
        msg("user", "Go."),
        create_call("one", "alpha"),
        create_call("two", "beta"),
        update_call(edit("beta", "BETA")),
    )
    assert canvas_messages(result) == ["[canvas: one]\nalpha", "[canvas: two]\nBETA"]


def test_an_older_reply_with_the_id_only_in_its_text_still_binds() -> None:
    older = msg(
        "tool",
        json.dumps({"result": "Successfully created text document 'n'", "textdoc_id": "abc123"}),
        recipient="all",
    )
    older["author"]["name"] = CREATED
    result = run(
        msg("user", "Go."),
        create_call("n", "first"),
        older,
        create_call("m", "second"),
        update_call(edit("first", "FIRST")),
        reply(UPDATED, "abc123"),
    )
    assert canvas_messages(result) == ["[canvas: m]\nsecond", "[canvas: n]\nFIRST"]


def test_a_call_chatgpt_refused_changes_nothing_and_is_not_counted() -> None:
    result = run(
        msg("user", "Go."),
        create_call("doc", "one two"),
        reply(CREATED, "d"),
        update_call(edit("two", "three")),  # would apply here, but ChatGPT refused it
        reply(UPDATED, None, failed=True),
        create_call("never", "refused create"),
        reply(CREATED, None, failed=True),
    )
    assert canvas_messages(result) == ["[canvas: doc]\none two"]
    assert result.stats.canvas_updates_not_applied == 0


@pytest.mark.parametrize(
    "bad_update",
    [
        update_call(edit("no such words", "x")),  # does not match
        update_call(edit("(unclosed", "x")),  # does not compile
        update_call(edit("(a+)+$", "x")),  # catastrophic: refused
        update_call(edit("two", "\\q")),  # the template does not expand
        update_call(raw="{not json"),
        update_call(raw=json.dumps({"updates": "nope"})),
        update_call(raw="[" * 100_000),  # nesting that json refuses
        update_call(raw='{"updates": [{"pattern": "a{' + "9" * 5000 + '}"}]}'),
    ],
    ids=[
        "no-match",
        "invalid",
        "catastrophic",
        "template",
        "not-json",
        "bad-shape",
        "deep",
        "digits",
    ],
)
def test_an_update_that_cannot_be_applied_keeps_the_last_good_text_and_is_counted(
    bad_update: Json,
) -> None:
    result = run(
        msg("user", "Go."),
        create_call("doc", "one two"),
        reply(CREATED, "d"),
        update_call(edit("one", "ONE")),
        reply(UPDATED, "d"),
        msg("assistant", "Updated."),
        bad_update,
        reply(UPDATED, "d"),  # the export says it worked; we could not reproduce it
        msg("assistant", "Updated again."),
    )
    assert texts(result) == [
        ("user", "Go."),
        ("assistant", "[canvas: doc]\nONE two"),  # where it was last written successfully
        ("assistant", "Updated.\n\nUpdated again."),
    ]
    assert result.stats.canvas_updates_not_applied == 1


def test_an_update_before_any_document_is_counted() -> None:
    result = run(msg("user", "Go."), update_call(edit(".*", "text")), msg("assistant", "ok"))
    assert canvas_messages(result) == []
    assert result.stats.canvas_updates_not_applied == 1


def test_an_update_to_a_document_never_created_on_this_thread_can_still_rewrite_it() -> None:
    result = run(
        msg("user", "Go."),
        update_call(edit(".*", "whole new text")),
        reply(UPDATED, "elsewhere", title="From elsewhere"),
    )
    assert canvas_messages(result) == ["[canvas: From elsewhere]\nwhole new text"]


def test_a_create_without_readable_content_is_counted_and_a_rewrite_recovers_it() -> None:
    broken = msg(
        "assistant",
        content={"content_type": "text", "parts": [""]},
        recipient="canmore.create_textdoc",
    )
    result = run(
        msg("user", "Go."),
        broken,
        reply(CREATED, "d", title="Recovered"),
        update_call(edit(".*", "complete replacement")),
        reply(UPDATED, "d"),
    )
    assert canvas_messages(result) == ["[canvas: Recovered]\ncomplete replacement"]
    assert result.stats.canvas_updates_not_applied == 1


def test_comments_and_other_canvas_tools_are_not_document_text() -> None:
    comment = msg(
        "assistant",
        json.dumps({"comments": [{"pattern": "one", "comment": "Consider more detail."}]}),
        recipient="canmore.comment_textdoc",
    )
    result = run(msg("user", "Go."), create_call("doc", "one"), comment, msg("assistant", "ok"))
    assert "Consider more detail" not in "\n".join(m.text for m in result.messages)
    assert canvas_messages(result) == ["[canvas: doc]\none"]


def test_only_the_visible_branch_counts() -> None:
    mapping, leaf = chain(
        msg("user", "Go."),
        create_call("doc", "base"),
        reply(CREATED, "d"),
        msg("user", "Edit it."),
    )
    mapping["dead"] = {
        "id": "dead",
        "parent": leaf,
        "message": update_call(edit("base", "DEAD BRANCH")),
    }
    mapping["live"] = {"id": "live", "parent": leaf, "message": update_call(edit("base", "live"))}
    result = linearize(conv(mapping, "live"))
    assert canvas_messages(result) == ["[canvas: doc]\nlive"]


def test_an_empty_document_is_not_a_message_and_markers_are_removed_from_documents() -> None:
    result = run(
        msg("user", "Go."),
        create_call("empty", ""),
        create_call("cited", "\ue203Fact.\ue204\ue206 More\ue200cite\ue202turn0search1\ue201."),
    )
    assert canvas_messages(result) == ["[canvas: cited]\nFact. More."]


def test_a_name_that_is_not_usable_becomes_untitled() -> None:
    arguments = json.dumps({"name": ["x"], "content": "text"})
    call = msg("assistant", arguments, recipient="canmore.create_textdoc")
    assert canvas_messages(run(msg("user", "Go."), call)) == ["[canvas: Untitled]\ntext"]
    long_name = create_call("n\n" * 500, "text")
    [label] = [m.text.split("\n", 1)[0] for m in run(msg("user", "Go."), long_name).messages[1:]]
    assert len(label) < 220 and "\n" not in label


def test_a_huge_document_is_truncated_at_the_message_limit_and_counted() -> None:
    limit = 4096
    call = create_call("big", "x" * 50_000)
    mapping, leaf = chain(msg("user", "Go."), call, msg("assistant", "after"))
    result = linearize(conv(mapping, leaf), max_message_bytes=limit)
    [document] = canvas_messages(result)
    assert document.endswith(TRUNCATION_MARKER)
    assert len(document.encode("utf-8")) <= limit
    assert texts(result)[-1] == ("assistant", "after"), "the answer after it keeps its own limit"
    assert result.stats.truncated_messages == 1


def test_a_replacement_that_multiplies_the_document_stays_within_the_limit() -> None:
    limit = 4096
    mapping, leaf = chain(
        msg("user", "Go."),
        create_call("doc", "y" * 3000),
        update_call(edit(".*", "\\g<0>" * 100_000)),  # would be 300 MB
    )
    result = linearize(conv(mapping, leaf), max_message_bytes=limit)
    [document] = canvas_messages(result)
    assert len(document.encode("utf-8")) <= limit
    assert document.endswith(TRUNCATION_MARKER)


def test_ten_thousand_updates_to_one_document_are_bounded_by_the_budget() -> None:
    text = "word " * 20_000  # 100 KB
    calls = [update_call(edit("word", f"w{number}")) for number in range(10_000)]
    result = run(msg("user", "Go."), create_call("doc", text), *calls)
    [document] = canvas_messages(result)
    applied = 10_000 - result.stats.canvas_updates_not_applied
    assert 0 < applied < 10_000, "some updates apply, then the budget stops the rest"
    # Each applied update replaced the first remaining "word", in order.
    assert document.startswith("[canvas: doc]\nw0 w1 w2 ")
    assert f" w{applied - 1} word " in document
    assert f"w{applied} " not in document
    # Each applied update scanned and copied the 100 KB document about twice.
    assert applied * 200_000 <= CANVAS_WORK_UNITS


def test_ten_thousand_small_documents_are_kept_once_each_until_the_budget() -> None:
    """Every call costs budget, so a flood of tiny calls is bounded too; what is kept is kept
    once, and the rest is counted."""
    calls = [create_call(f"doc {number}", f"text {number}") for number in range(10_000)]
    result = run(msg("user", "Go."), *calls)
    documents = canvas_messages(result)
    kept = result.stats.canvas_documents
    assert 1_000 < kept == len(documents) == len(set(documents))
    assert kept + result.stats.canvas_updates_not_applied == 10_000
    assert documents[:2] == ["[canvas: doc 0]\ntext 0", "[canvas: doc 1]\ntext 1"]
    assert kept * CALL_UNITS <= CANVAS_WORK_UNITS + 10_000 * 4 * 80


def test_canvas_calls_with_junk_fields_do_not_break_the_conversation() -> None:
    no_content = msg("assistant", recipient="canmore.create_textdoc")
    no_content["content"] = None
    junk: list[Json] = [
        no_content,
        msg("assistant", content={"parts": 3}, recipient="canmore.update_textdoc"),
        {"author": "x", "recipient": "canmore.create_textdoc"},
        {"recipient": "canmore.update_textdoc", "author": {"role": "assistant"}},
        msg("tool", "Successfully", recipient="all"),
    ]
    result = run(msg("user", "Go."), *junk, msg("assistant", "still here"))
    assert texts(result) == [("user", "Go."), ("assistant", "still here")]


# --- conversations without an id -------------------------------------------------------------


def test_a_conversation_without_an_id_is_imported_with_a_stable_derived_id() -> None:
    mapping, leaf = chain(msg("user", "hello", t=1.0), msg("assistant", "hi", t=2.0))
    raw = conv(mapping, leaf)
    del raw["id"]
    first = linearize(raw)
    assert first.id.startswith(DERIVED_ID_PREFIX)
    assert texts(first) == [("user", "hello"), ("assistant", "hi")]
    again = linearize(json.loads(json.dumps(raw)))  # the same export read again
    assert again.id == first.id


@pytest.mark.parametrize(
    "change",
    [
        lambda raw: raw.update(title="Another title"),
        lambda raw: raw.update(update_time=1_700_009_999.0),
        lambda raw: raw["mapping"]["n1"]["message"]["content"].update(parts=["hi!"]),
        lambda raw: raw["mapping"].update(extra={"id": "extra", "parent": None, "message": None}),
    ],
    ids=["title", "time", "text", "tree"],
)
def test_id_less_conversations_that_differ_in_anything_get_different_ids(change: Any) -> None:
    mapping, leaf = chain(msg("user", "hello"), msg("assistant", "hi"))
    raw = conv(mapping, leaf)
    del raw["id"]
    before = linearize(raw).id
    change(raw)
    assert linearize(raw).id != before


def test_a_derived_id_never_contains_text_and_has_a_fixed_length() -> None:
    mapping, leaf = chain(msg("user", "secret words " * 1000))
    raw = conv(mapping, leaf, title="Private title")
    del raw["id"]
    derived = linearize(raw).id
    assert "secret" not in derived and "Private" not in derived
    assert len(derived) == len(DERIVED_ID_PREFIX) + 32


def test_id_less_shapes_that_used_to_be_rejected_are_conversations() -> None:
    assert linearize({"title": "no id, no mapping"}).messages == ()
    listed = linearize({"messages": [{"role": "user", "content": "from a list"}]})
    assert texts(listed) == [("user", "from a list")]
    assert listed.id.startswith(DERIVED_ID_PREFIX)


def test_no_marker_character_survives_anywhere() -> None:
    content = {"content_type": "text", "parts": ["".join(MARKER_CHARACTERS) * 3 + "x"]}
    result = run(msg("user", content=content), title="Trip to \ue203Lyon\ue204\ue206")
    assert texts(result) == [("user", "x")]
    assert result.title == "Trip to Lyon"
