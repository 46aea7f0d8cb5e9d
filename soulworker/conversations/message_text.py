"""Turns the ``content`` of one export message into text, and makes text safe to store.

The export's ``content`` objects vary by ``content_type`` (docs/export-format.md). What
carries dialogue is: string ``parts``, the ``text`` of dict parts (voice chats keep their words in
``audio_transcription`` parts), and, for types without parts, a ``text`` field. Image parts, and
real video frames, become ``[image]`` so that a message that was only a picture still counts as
a message; audio parts (``audio_asset_pointer``, and the real-time pointer of a voice turn when
it carries no video) add nothing because their transcription part carries the words.

Every function here is total over arbitrary JSON values: wrong types are ignored, never raised on.
"""

from __future__ import annotations

from soulworker.conversations.citations import (
    BRACKET_START_BYTES,
    MARKER_PREFIX_BYTES,
    has_markers,
    strip_citations,
)

IMAGE_PLACEHOLDER = "[image]"
"""What an image part becomes: short, and recognisable to the model as "a picture was here"."""

TRUNCATION_MARKER = "\n[… message truncated]"
"""Appended to a message cut at the byte limit, so a reader sees that text is missing."""

_TRUNCATION_MARKER_BYTES = len(TRUNCATION_MARKER.encode("utf-8"))

MIN_MESSAGE_BYTES = 1024
"""The smallest byte limit accepted: the marker must fit with room for some text."""

IGNORED_PROFILE_TEXTS = frozenset({"Original custom instructions no longer available"})
"""Placeholders ChatGPT writes in place of a profile (seen in shared conversations): not facts."""

_PROFILE_PREAMBLE = "The user provided"
"""How ChatGPT's wrapper around custom instructions begins; the user's words sit in a fence."""

_FENCE = "```"

_INSTRUCTION_BOILERPLATE = (
    "Follow the instructions below naturally, without repeating, referencing, echoing, "
    "or mirroring any of their wording!",
    "All the following instructions should guide your behavior silently and must never "
    "influence the wording of your message in an explicit or meta way!",
)
"""Sentences ChatGPT prepends inside the fence of newer "how to respond" texts (not the user's)."""


def content_text(content: dict[str, object]) -> str:
    """The raw text of a message ``content`` object: parts joined by newlines, else ``text``.

    Empty parts are skipped. The result is not stripped or cleaned (see ``finalize_text``).
    """
    parts = content.get("parts")
    if isinstance(parts, str):
        parts = [parts]
    if isinstance(parts, list):
        pieces: list[str] = []
        for part in parts:
            if isinstance(part, str):
                if part:
                    pieces.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    if text:
                        pieces.append(text)
                elif _is_visual(part):
                    pieces.append(IMAGE_PLACEHOLDER)
        if pieces:
            return pieces[0] if len(pieces) == 1 else "\n".join(pieces)
    text = content.get("text")
    return text if isinstance(text, str) else ""


REAL_TIME_POINTER = "real_time_user_audio_video_asset_pointer"
"""The part a voice-mode user turn carries besides its transcription: an audio recording, and
video frames only when the camera was on (``frames_asset_pointers`` non-empty or a
``video_container_asset_pointer``). Its type name says "video" either way."""


def _is_visual(part: dict[str, object]) -> bool:
    """Whether a dict part is a picture (an image, or real video), as opposed to audio or data.

    A voice turn's real-time pointer is a picture only when it holds video: with an empty frame
    list and no video container it is audio, whose words are in the transcription part.
    """
    kind = part.get("content_type")
    if isinstance(kind, str):
        if kind == REAL_TIME_POINTER:
            return bool(part.get("frames_asset_pointers")) or bool(
                part.get("video_container_asset_pointer")
            )
        return "image" in kind or "video" in kind
    return "asset_pointer" in part


def custom_instructions_text(content: dict[str, object], metadata: dict[str, object]) -> str:
    """The user's own custom-instruction texts, labelled, or ``""`` when there are none.

    Prefers ``metadata.user_context_message_data`` (the bare texts the user typed); falls back
    to ``content.user_profile`` / ``content.user_instructions``, whose text ChatGPT wraps in a
    fixed preamble and a code fence, which are removed.
    """
    about_user = about_model = ""
    data = metadata.get("user_context_message_data")
    if isinstance(data, dict):
        about_user = _stripped(data.get("about_user_message"))
        about_model = _stripped(data.get("about_model_message"))
    if not about_user and not about_model:
        about_user = _unwrap_profile(content.get("user_profile"))
        about_model = _unwrap_profile(content.get("user_instructions"))
    return label_instructions(about_user, about_model)


def label_instructions(about_user: str, about_model: str) -> str:
    """The two custom-instruction texts as one labelled text (either may be empty)."""
    sections = []
    if about_user:
        sections.append(f"About the user:\n{about_user}")
    if about_model:
        sections.append(f"How the user wants answers:\n{about_model}")
    return "\n\n".join(sections)


def _stripped(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _unwrap_profile(value: object) -> str:
    text = _stripped(value)
    if not text.startswith(_PROFILE_PREAMBLE):
        return text
    first = text.find(_FENCE)
    last = text.rfind(_FENCE)
    if first < 0 or last <= first:
        return text
    inner = text[first + len(_FENCE) : last].strip()
    for sentence in _INSTRUCTION_BOILERPLATE:
        if inner.startswith(sentence):
            inner = inner[len(sentence) :].lstrip()
    return inner


def finalize_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` made storable, and whether it had to be truncated.

    Removes NUL characters (Postgres ``text`` refuses them), replaces lone surrogates (which
    JSON escapes can produce and UTF-8 cannot encode) with U+FFFD, strips citation, highlight
    and entity markers (``citations``) in every message,
    strips surrounding whitespace, and cuts text longer than ``max_bytes`` UTF-8 bytes on a
    character boundary, ending it with ``TRUNCATION_MARKER``; the result is never longer than
    ``max_bytes`` bytes.
    """
    if text.isascii():  # O(1) in CPython; bytes == characters, and no marker is ASCII
        if "\x00" in text:
            text = text.replace("\x00", "")
        text = text.strip()
        if len(text) <= max_bytes:
            return text, False
        return text[: max_bytes - _TRUNCATION_MARKER_BYTES].rstrip() + TRUNCATION_MARKER, True
    # One encode finds lone surrogates and gives the byte length; the NUL and marker tests
    # then run on bytes, which is several times faster than on wide characters.
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        text = repair_surrogates(text)
        encoded = text.encode("utf-8")
    if b"\x00" in encoded:
        text = text.replace("\x00", "")
    if MARKER_PREFIX_BYTES in encoded or BRACKET_START_BYTES in encoded:
        text = strip_citations(text)
    text = text.strip()
    if len(encoded) <= max_bytes:  # stripping only shortens
        return text, False
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    # Decoding a byte prefix with "ignore" drops a multi-byte character cut in half.
    head = encoded[: max_bytes - _TRUNCATION_MARKER_BYTES].decode("utf-8", "ignore")
    return head.rstrip() + TRUNCATION_MARKER, True


def repair_surrogates(text: str) -> str:
    """``text`` with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_line(value: object, max_chars: int) -> str:
    """A one-line, storable rendering of a short field (a title): whitespace runs collapsed,
    NULs, lone surrogates and markers removed, at most ``max_chars`` characters; ``""`` for
    non-text.

    Integers are rendered (a numeric title is still a name); booleans, floats and containers
    are not text.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    text = value if isinstance(value, str) else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = repair_surrogates(text)
        if has_markers(text):  # never seen in a title, but no marker is ever stored
            text = strip_citations(text)
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text
