"""Deterministic generator of realistic ChatGPT data exports, for tests and benchmarks.

The conversations look like the real ones described in ``docs/export-format.md`` (the
structure, the pitfalls, the size distribution): a ``mapping`` of
nodes linked by ``parent``, edit and regeneration branches with ``current_node`` in the newest
one, hidden system nodes listed before the root, tool traffic (python ``code`` and
``execution_output``, browsing ``tether_browsing_display`` / ``sonic_webpage`` / ``tether_quote``),
reasoning ``thoughts`` and ``reasoning_recap``, voice ``audio_transcription`` parts, image
pointers, custom instructions, ``bio`` memory writes, bulky citation metadata, and the defects
real exports have (no ``children``, missing or dangling ``current_node``, null titles, messages
without ``metadata``, unknown content types, duplicates across shards). Four traits are off
by default, so that exports generated before they existed keep their exact bytes: voice turns
with the camera on (``VOICE_VIDEO``), highlight and entity markers outside citations
(``HIGHLIGHTS``), Canvas documents created and edited with ``canmore`` calls (``CANVAS``), and
conversations without an id (``MISSING_ID``); turn them on with ``rates``.

Public API
----------
``GeneratorConfig``
    Everything that shapes an export: seed, size or count, ``form`` (``ExportForm``), which
    ``Feature`` s are on and how often they occur (``rates``), ``ensure_ascii`` and so on.
``write_export(path, config, *, collect_facts=False) -> ExportSummary``
    Streams an export to ``path`` in constant memory (one conversation at a time), in any of the
    forms: bare JSON array, ``{"conversations": [...]}``, gzip, ZIP with ``conversations.json``,
    ZIP with shards ``conversations-000.json`` … plus decoy files, ZIP with the files in a folder.
    With ``collect_facts`` the summary carries, per conversation id, the facts a correct reader
    and linearizer must reproduce (``ConversationFacts``), for the version that must win
    deduplication.
``iter_export(config) -> Iterator[GeneratedConversation]``
    The same conversations in the same order (duplicates included) without writing anything.
``generate_conversation(rng, config, index, *, persona=None, extra_turns=0)``
    One conversation (``GeneratedConversation``: the raw ``data`` dict plus its ``facts``).

Facts (``ConversationFacts``, for other engineers' assertions): the conversation's id and times,
``current_node`` as written and whether it is ``ok``/``missing``/``dangling``, the leaf a correct
walk starts from (``expected_leaf``, the newest leaf when ``current_node`` is unusable), the
path root → leaf, the dead-branch node ids, the expected dialogue (``messages``: role, node
ids — several when a continued answer or an answer around tool calls is merged — and the text
parts with citation markers stripped and images as ``"[image]"``), texts that must never appear
as dialogue (``dead_texts``, ``hidden_texts``: tool traffic, reasoning, persona signals), the
persona signals (custom instructions, ``bio`` writes, memory snapshots, user system messages),
unknown content types on the path, and which ``Feature`` s occurred. Every dialogue text ends
with a unique tag such as ``(#12.3)``, so "must not appear" checks cannot collide by chance.

Example::

    config = GeneratorConfig(seed=7, conversations=50, form=ExportForm.ZIP_SHARDS,
                             rates={Feature.BRANCHES: 0.5, Feature.DUPLICATES: 0.1})
    summary = write_export(tmp_path / "export.zip", config, collect_facts=True)
    for conversation_id, facts in summary.expected.items(): ...

Determinism: conversation ``i`` of seed ``s`` depends only on ``(s, i)``, never on the form, the
size target or the other conversations, so a test can regenerate any one of them alone
(``generate_conversation(conversation_rng(config, i), config, i)``). Duplicates
(``DuplicateKind``) are conversation ``i`` again, with one more exchange and/or another
``update_time``; the summary's ``expected`` holds the copy that must win (newest
``update_time``, then the larger mapping, then the later copy).

Sizes follow the real distribution: p50 ~31 KB and p99 ~350 KB per conversation (a log-normal
target, ``DEFAULT_MEDIAN_CONVERSATION_BYTES`` and ``DEFAULT_SIZE_SIGMA``).
"""

from __future__ import annotations

import enum
import gzip
import json
import math
import random
import re
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

JSON = dict[str, Any]

DEFAULT_MEDIAN_CONVERSATION_BYTES = 24_500
"""Median size *target*; a conversation stops at the first exchange past its target, so the
written sizes come out at p50 ~31 KB and p99 ~350 KB, like the real export
(docs/export-format.md)."""

DEFAULT_SIZE_SIGMA = 1.05
"""Log-normal sigma of the target; with the overshoot above it puts p99 near the real ~370 KB."""

MIN_CONVERSATION_BYTES = 1_500
"""Smallest target: one short exchange with its metadata."""

MAX_CONVERSATION_BYTES = 3_000_000
"""Largest target drawn from the distribution (the analysed export's max was 2.6 MB)."""

DEFAULT_SHARD_BYTES = 8 * 1024 * 1024
"""Uncompressed bytes per shard; small enough that a 100 MB export has a dozen shards."""

HUGE_MESSAGE_CHARS = 50_000
"""Size of a "huge" message: a pasted document or a long generated answer."""

MANY_MESSAGES_TURNS = 600
"""Turns in a "many messages" conversation (1,200+ messages)."""

DEFAULT_NOW = 1_780_000_000.0
"""Fixed "now" (2026-05-28) so exports do not change with the clock; times go back two years."""

TIME_SPAN_SECONDS = 2 * 365 * 24 * 3600
"""Conversations are spread over the two years before ``now``."""

NODE_OVERHEAD_BYTES = 780
"""Average JSON bytes of a node besides its text (ids, author, metadata): used to hit sizes."""

SEARCH_ENTRY_BYTES = 900
"""Average JSON bytes one search result adds to an answer's metadata (entry plus reference)."""

TEXT_POOL_PARAGRAPHS = 3_000
"""Distinct paragraphs; more than deflate's 32 KB window sees, so compression stays realistic."""


class Feature(enum.Enum):
    """A trait of real exports the generator can produce; each can be switched off."""

    BRANCHES = "branches"  # edits (user sibling) and regenerations (assistant sibling)
    HIDDEN_SYSTEM = "hidden_system"  # empty hidden system node, listed before the root
    PYTHON_TOOL = "python_tool"  # code -> execution_output (sometimes system_error)
    BROWSING = "browsing"  # web search: code -> tether_browsing_display / sonic_webpage
    FILE_SEARCH = "file_search"  # myfiles_browser -> tether_quote
    IMAGE_GENERATION = "image_generation"  # dalle.text2im call and tool image
    REASONING = "reasoning"  # thoughts + reasoning_recap before an answer
    VOICE = "voice"  # audio_transcription parts in multimodal_text
    IMAGES = "images"  # user image uploads (file-service:// and sediment://)
    CUSTOM_INSTRUCTIONS = "custom_instructions"  # user_editable_context
    BIO_MEMORY = "bio_memory"  # assistant -> bio writes, model_editable_context snapshots
    USER_SYSTEM_MESSAGES = "user_system_messages"  # system text with is_user_system_message
    CONTINUATIONS = "continuations"  # one answer split over consecutive assistant nodes
    CITATIONS = "citations"  # \ue200cite\ue202…\ue201 and 【12†source】 markers in answers
    METADATA_BULK = "metadata_bulk"  # search_result_groups / content_references / citations
    MISSING_CHILDREN = "missing_children"  # no "children" key on any node
    MISSING_CURRENT_NODE = "missing_current_node"  # no "current_node" key
    DANGLING_CURRENT_NODE = "dangling_current_node"  # current_node names no node
    NULL_TITLES = "null_titles"  # title null or absent
    MISSING_METADATA = "missing_metadata"  # messages without a "metadata" key
    UNKNOWN_CONTENT_TYPES = "unknown_content_types"  # new content types that carry text
    SHUFFLED_MAPPING = "shuffled_mapping"  # mapping order unrelated to the tree
    UNICODE = "unicode"  # emoji, CJK, RTL, combining marks
    HUGE_MESSAGES = "huge_messages"  # 50 KB messages
    MANY_MESSAGES = "many_messages"  # conversations with 1,200+ messages
    DUPLICATES = "duplicates"  # the same conversation id again, other update_time
    VOICE_VIDEO = "voice_video"  # a voice turn with the camera on: real video frames
    HIGHLIGHTS = "highlights"  # \ue203…\ue204\ue206 highlights and entity markers, no citation
    CANVAS = "canvas"  # canmore.create_textdoc / update_textdoc calls and their replies
    MISSING_ID = "missing_id"  # a conversation without "id" and "conversation_id"


DEFAULT_RATES: Mapping[Feature, float] = {
    # Per conversation unless noted. Chosen to resemble the analysed export (docs/export-format.md).
    Feature.BRANCHES: 0.06,  # per exchange
    Feature.HIDDEN_SYSTEM: 0.85,
    Feature.PYTHON_TOOL: 0.04,  # per exchange
    Feature.BROWSING: 0.05,  # per exchange
    Feature.FILE_SEARCH: 0.01,  # per exchange
    Feature.IMAGE_GENERATION: 0.01,  # per exchange
    Feature.REASONING: 0.05,  # per exchange
    Feature.VOICE: 0.03,
    Feature.IMAGES: 0.03,  # per user message
    Feature.CUSTOM_INSTRUCTIONS: 0.4,
    Feature.BIO_MEMORY: 0.02,  # per exchange
    Feature.USER_SYSTEM_MESSAGES: 0.03,
    Feature.CONTINUATIONS: 0.02,  # per answer
    Feature.CITATIONS: 1.0,  # share of browsing answers with markers
    Feature.METADATA_BULK: 1.0,  # share of browsing answers with full result metadata
    Feature.MISSING_CHILDREN: 0.0,  # set to 1.0 for a whole export without children
    Feature.MISSING_CURRENT_NODE: 0.01,
    Feature.DANGLING_CURRENT_NODE: 0.01,
    Feature.NULL_TITLES: 0.01,
    Feature.MISSING_METADATA: 0.02,  # per message
    Feature.UNKNOWN_CONTENT_TYPES: 0.003,  # per message
    Feature.SHUFFLED_MAPPING: 0.02,
    Feature.UNICODE: 0.15,  # per paragraph
    Feature.HUGE_MESSAGES: 0.002,  # per message
    Feature.MANY_MESSAGES: 0.001,
    Feature.DUPLICATES: 0.01,
    # Off by default (see the module docstring); realistic rates when turned on: one export in
    # the field had 26 of 491 conversations with Canvas.
    Feature.VOICE_VIDEO: 0.0,  # per user voice message
    Feature.HIGHLIGHTS: 0.0,  # per plain answer
    Feature.CANVAS: 0.0,  # per exchange
    Feature.MISSING_ID: 0.0,
}


class ExportForm(enum.Enum):
    """How the conversations are packaged."""

    JSON = "json"  # conversations.json: a bare array (the real format)
    WRAPPED = "wrapped"  # {"conversations": [...]} (defensive case)
    GZIP = "gzip"  # a bare array, gzip-compressed
    ZIP = "zip"  # ZIP with conversations.json at the root (2023-2025 exports)
    ZIP_SHARDS = "zip-shards"  # ZIP with conversations-000.json … (2026+ exports)
    ZIP_FOLDER = "zip-folder"  # ZIP with conversations.json inside one folder

    @property
    def is_zip(self) -> bool:
        return self in (ExportForm.ZIP, ExportForm.ZIP_SHARDS, ExportForm.ZIP_FOLDER)


class DuplicateKind(enum.Enum):
    """How a duplicated conversation's two copies differ (see ``_wins`` for the rule)."""

    NEWER_LATER = "newer_later"  # the later copy has one more turn and a newer update_time
    NEWER_EARLIER = "newer_earlier"  # the first copy is the newer one
    TIE_LARGER = "tie_larger"  # same update_time; the later copy has the larger mapping
    IDENTICAL = "identical"  # byte-identical copies


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Stop at ``target_bytes`` of conversation JSON or ``conversations``.

    ``size_basis`` says what ``target_bytes`` measures: ``"json"`` the uncompressed
    conversation JSON (default), ``"file"`` the output file.
    ``features`` lists what may occur; ``rates`` overrides ``DEFAULT_RATES`` for some of them.
    """

    seed: int = 1
    target_bytes: int | None = None
    conversations: int | None = None
    size_basis: str = "json"
    form: ExportForm = ExportForm.JSON
    features: frozenset[Feature] = frozenset(Feature)
    rates: Mapping[Feature, float] = field(default_factory=dict)
    ensure_ascii: bool = False
    shard_bytes: int = DEFAULT_SHARD_BYTES
    folder: str | None = None
    decoys: bool = True
    compresslevel: int = 6
    median_conversation_bytes: int = DEFAULT_MEDIAN_CONVERSATION_BYTES
    size_sigma: float = DEFAULT_SIZE_SIGMA
    now: float = DEFAULT_NOW

    def rate(self, feature: Feature) -> float:
        """How often ``feature`` occurs; 0 when it is switched off."""
        if feature not in self.features:
            return 0.0
        return self.rates.get(feature, DEFAULT_RATES[feature])


@dataclass(frozen=True)
class ExpectedMessage:
    """One dialogue message a correct linearizer produces (after merging continued answers).

    ``parts`` are the text pieces in order, citation markers removed and images as
    ``"[image]"``; ``raw_parts`` are the same pieces as written in the export. A Canvas
    document (``canvas``) is a message of its own whose one part is the exact text expected;
    its ``raw_parts`` are its final text, which no node holds verbatim when it was edited.
    """

    role: str
    node_ids: tuple[str, ...]
    parts: tuple[str, ...]
    raw_parts: tuple[str, ...]
    create_time: float | None
    canvas: bool = False  # a Canvas document: "[canvas: NAME]" and its final text, one part


@dataclass(frozen=True)
class CustomInstructions:
    """One custom-instructions version as the user typed it (``user_context_message_data``)."""

    about_user: str
    about_model: str


@dataclass(frozen=True)
class ConversationFacts:
    """What a generated conversation contains, for assertions in other tests.

    ``expected_leaf`` is where a correct walk starts: ``current_node`` when it names a node,
    else the newest leaf. ``path`` is root → leaf. ``dead_texts`` appear only on branches off
    the path and ``hidden_texts`` only in non-dialogue nodes on the path (tool traffic,
    reasoning, persona signals): neither may appear in the dialogue. Every dialogue text carries
    a unique tag, so such assertions cannot collide by chance.
    """

    id: str
    index: int
    title: str | None
    create_time: float
    update_time: float
    current_node: str | None
    current_node_state: str  # "ok" | "missing" | "dangling"
    expected_leaf: str
    path: tuple[str, ...]
    dead_branch_nodes: frozenset[str]
    messages: tuple[ExpectedMessage, ...]
    dead_texts: tuple[str, ...]
    hidden_texts: tuple[str, ...]
    custom_instructions: CustomInstructions | None
    bio_writes: tuple[str, ...]
    memory_snapshots: tuple[str, ...]
    user_system_messages: tuple[str, ...]
    unknown_content_types: tuple[str, ...]
    content_types: frozenset[str]
    features: frozenset[Feature]
    node_count: int
    has_children: bool
    image_parts: int
    voice_parts: int
    has_id: bool = True  # False: the export gives no id; the reader must derive one
    canvas_documents: tuple[str, ...] = ()  # the final canvas messages, exactly as expected
    canvas_failed_calls: int = 0  # updates ChatGPT refused ("Failed with error")


@dataclass(frozen=True)
class GeneratedConversation:
    """A conversation as it goes into the export, and what it contains."""

    data: JSON
    facts: ConversationFacts
    duplicate: DuplicateKind | None = None


@dataclass
class ExportSummary:
    """What ``write_export`` wrote.

    ``items_written`` counts conversation objects in the files (duplicates included);
    ``expected`` maps each conversation id to the facts of the copy that must win
    deduplication (only with ``collect_facts``), ``duplicates`` each duplicated id to its kind.
    """

    path: Path
    form: ExportForm
    members: list[str]
    items_written: int = 0
    unique_conversations: int = 0
    json_bytes: int = 0
    file_bytes: int = 0
    conversation_sizes: list[int] = field(default_factory=list)
    duplicates: dict[str, DuplicateKind] = field(default_factory=dict)
    expected: dict[str, ConversationFacts] | None = None


# --------------------------------------------------------------------------------------------
# Text


_WORD_TEXT = (
    "the of and to in is that for it with as on was be this are by at from or an have not but "
    "they you we can which more one all their there about would so what when will been has "
    "time people data model python code function list value error file system project plan "
    "week garden recipe budget travel weather music running training sleep coffee meeting "
    "client design draft letter essay chapter story character paint guitar piano lesson "
    "mortgage insurance doctor appointment vitamin protein kitchen window bicycle train "
    "ticket museum language grammar translate spanish german history science physics "
    "chemistry biology theorem proof matrix vector database query index server network deploy "
    "container kubernetes docker cloud invoice spreadsheet formula chart quarterly report "
    "summary review feedback interview resume salary manager team deadline sprint backlog "
    "feature release bug test coverage refactor performance memory cache latency throughput "
    "benchmark config setting option parameter argument return loop class method object "
    "string integer float boolean dictionary tuple import module package library version "
    "upgrade install terminal command shell script regex pattern match replace because "
    "however therefore although perhaps maybe really quite very simply actually first second "
    "third next finally also instead otherwise meanwhile today tomorrow yesterday morning "
    "evening weekend holiday birthday anniversary family friend partner daughter son mother "
    "father sister brother dog cat neighbour city village mountain river"
)
_WORDS = tuple(_WORD_TEXT.split())

_TAG = re.compile(r"\(#\d+\.\d+\)")
"""The unique tag that ends every generated text (see ``_Builder.tag``)."""
"""The vocabulary of generated prose: everyday and technical words."""

_CODE_SNIPPETS = (
    'def parse(line: str) -> dict[str, int]:\n    parts = line.split(",")\n'
    '    return {p.split("=")[0]: int(p.split("=")[1]) for p in parts if "=" in p}\n',
    'for i in range(10):\n    if data[i] > threshold:\n        results.append({"i": i})\n',
    'const config = { retries: 3, backoff: [100, 200, 400], name: "worker" };\n',
    "SELECT id, title FROM conversations WHERE user_id = $1 ORDER BY created_at DESC;\n",
    'pattern = re.compile(r"^(\\d{4})-(\\d{2})-(\\d{2})$")\nprint(pattern.match("2024-05-01"))\n',
    'path = "C:\\\\Users\\\\sam\\\\notes.txt"\nwith open(path) as f:\n    print(f.read())\n',
    "matrix = [[1, 2], [3, 4]]\nprint([[row[i] for row in matrix] for i in range(2)])\n",
    'echo "{\\"key\\": [1, 2, {\\"nested\\": true}]}" | jq \'.key[2]\'\n',
)

_UNICODE_SNIPPETS = (
    "Let's celebrate 🎉🥳 — it worked! 👍🏽",
    "東京で会議があります。明日の予定を確認してください。",
    "北京的天气今天很好，我们去公园散步吧。",
    "안녕하세요, 오늘 회의는 세 시에 시작합니다.",
    "مرحبا، كيف حالك اليوم؟ أتمنى أن تكون بخير.",
    "שלום, מה שלומך? נתראה מחר בבוקר.",
    "Cafe\u0301 au lait, nai\u0308ve re\u0301sume\u0301 and Z\u0335a\u0336l\u0337g\u0338o text.",
    "Ελληνικά: καλημέρα κόσμε. Русский: привет, мир! हिन्दी: नमस्ते दुनिया",
    "Family: 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, keycap 1️⃣ and a zero-width\u200bjoin.",
)

_DOMAINS = (
    "en.wikipedia.org",
    "docs.python.org",
    "stackoverflow.com",
    "github.com",
    "bbc.co.uk",
    "nytimes.com",
    "developer.mozilla.org",
    "arxiv.org",
    "reuters.com",
    "healthline.com",
)

_ENTITIES = (
    ("city", "Lyon"),
    ("people", "Lovelace"),
    ("company", "Anthropic"),
    ("place", "Yosemite"),
    ("book", "Dune"),
)
"""Entity markers the generator writes: one-word names, so no marker ever holds a space."""

_MODELS = ("gpt-4o", "gpt-4", "gpt-4o-mini", "o3", "gpt-5", "text-davinci-002-render-sha")

_PERSON_FACTS = (
    "User's name is Sam Rivera.",
    "User works as a pediatric nurse in Lyon.",
    "User has a border collie named Biscuit.",
    "User is learning German for a move to Berlin next year.",
    "User prefers concise answers with code examples.",
    "User is training for a half marathon in October.",
    "User is vegetarian and allergic to peanuts.",
    "User is writing a fantasy novel about a lighthouse keeper.",
    "User's daughter Mia starts school in September.",
    "User plays jazz piano on weekends.",
    "User is building a budgeting app with FastAPI and Postgres.",
    "User dislikes emoji in professional writing.",
)


class TextPool:
    """Pre-built paragraphs so generating gigabytes costs no per-word randomness."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}:text-pool")
        self.paragraphs: list[str] = []
        self.unicode_paragraphs: list[str] = []
        for index in range(TEXT_POOL_PARAGRAPHS):
            kind = index % 10
            if kind == 0:
                lang = rng.choice(("python", "javascript", "sql", "bash"))
                self.paragraphs.append(f"```{lang}\n{rng.choice(_CODE_SNIPPETS)}```")
            elif kind == 1:
                items = "\n".join(
                    f"- {self._sentence(rng, 4, 10)}" for _ in range(rng.randint(2, 5))
                )
                self.paragraphs.append(f"**{self._sentence(rng, 2, 5)[:-1]}**\n{items}")
            else:
                sentences = [self._sentence(rng, 6, 22) for _ in range(rng.randint(2, 6))]
                if rng.random() < 0.1:
                    sentences.append(f'As the docs say, "{self._sentence(rng, 4, 8)}"')
                if rng.random() < 0.05:
                    sentences.append(f"See [the guide](https://{rng.choice(_DOMAINS)}/guide).")
                self.paragraphs.append(" ".join(sentences))
            snippet = rng.choice(_UNICODE_SNIPPETS)
            self.unicode_paragraphs.append(f"{self._sentence(rng, 4, 12)} {snippet}")

    @staticmethod
    def _sentence(rng: random.Random, low: int, high: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
        words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice((".", ".", ".", "?", "!"))

    def text(self, rng: random.Random, chars: int, unicode_rate: float) -> tuple[str, bool]:
        """About ``chars`` characters of paragraphs separated by blank lines, and whether any
        of them is a non-Latin (unicode) paragraph."""
        pieces: list[str] = []
        total = 0
        used_unicode = False
        while total < chars:
            if unicode_rate and rng.random() < unicode_rate:
                piece = rng.choice(self.unicode_paragraphs)
                used_unicode = True
            else:
                piece = rng.choice(self.paragraphs)
            pieces.append(piece)
            total += len(piece) + 2
        return "\n\n".join(pieces), used_unicode

    def sentence(self, rng: random.Random) -> str:
        return self._sentence(rng, 4, 12)


# --------------------------------------------------------------------------------------------
# Persona (per export, so custom instructions repeat across conversations like real ones)


@dataclass(frozen=True)
class Persona:
    """The export owner's custom-instruction versions (oldest first) and memory facts."""

    versions: tuple[tuple[float, CustomInstructions], ...]
    facts: tuple[str, ...]

    @classmethod
    def for_seed(cls, seed: int, now: float) -> Persona:
        rng = random.Random(f"{seed}:persona")
        facts = tuple(rng.sample(_PERSON_FACTS, 8))
        versions = []
        start = now - TIME_SPAN_SECONDS
        for number in range(3):
            about_user = " ".join(rng.sample(facts, 3)) + f" (profile v{number + 1})"
            about_model = (
                rng.choice(
                    (
                        "Be direct and skip the pleasantries.",
                        "Explain your reasoning step by step, and use metric units.",
                        "Answer in British English and keep it short.",
                    )
                )
                + f" (instructions v{number + 1})"
            )
            versions.append(
                (
                    start + number * TIME_SPAN_SECONDS / 3,
                    CustomInstructions(about_user, about_model),
                )
            )
        return cls(tuple(versions), facts)

    def instructions_at(self, time: float) -> CustomInstructions:
        current = self.versions[0][1]
        for since, version in self.versions:
            if since <= time:
                current = version
        return current


# --------------------------------------------------------------------------------------------
# One conversation


def _template(text: str) -> str:
    """``text`` as a replacement template that expands to itself."""
    return text.replace("\\", "\\\\")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _strip_markers(text: str) -> str:
    # The generator only writes markers it knows the clean form of (see cite and highlight):
    # citations right after a full stop, entities that show a one-word name, highlights.
    out = text
    while "\ue200" in out:
        start = out.index("\ue200")
        end = out.index("\ue201", start)
        kind, _, payload = out[start + 1 : end].partition("\ue202")
        words = json.loads(payload)[1] if kind == "entity" else ""
        out = out[:start] + words + out[end + 1 :]
    while "\u3010" in out:
        start = out.index("\u3010")
        end = out.index("\u3011", start)
        out = out[:start] + out[end + 1 :]
    for highlight in ("\ue203", "\ue204", "\ue206"):
        out = out.replace(highlight, "")
    return out


@dataclass
class _CanvasDoc:
    name: str
    text: str


@dataclass
class _Node:
    id: str
    parent: str | None
    message: JSON | None
    dialogue: ExpectedMessage | None = None  # set for user/assistant text to "all"
    hidden_texts: tuple[str, ...] = ()
    children: list[str] = field(default_factory=list)


class _Builder:
    """Builds one conversation's mapping while recording the facts about it."""

    def __init__(
        self,
        rng: random.Random,
        config: GeneratorConfig,
        pool: TextPool,
        persona: Persona,
        index: int,
    ) -> None:
        self.rng = rng
        self.config = config
        self.pool = pool
        self.persona = persona
        self.index = index
        self.nodes: dict[str, _Node] = {}
        self.order: list[str] = []
        self.time = config.now - rng.random() * TIME_SPAN_SECONDS
        self.create_time = self.time
        self.model = rng.choice(_MODELS)
        self.tag_counter = 0
        self.size = 0
        self.features: set[Feature] = set()
        self.content_types: set[str] = set()
        self.unknown_types: list[str] = []
        self.bio_writes: list[str] = []
        self.snapshots: list[str] = []
        self.user_system: list[str] = []
        self.custom: CustomInstructions | None = None
        self.image_parts = 0
        self.voice_parts = 0
        self.unicode_rate = config.rate(Feature.UNICODE)
        self.dead_depth = 0  # > 0 while a branch that will not be on the thread is generated
        self.documents: dict[str, _CanvasDoc] = {}  # by textdoc_id, their state on the thread
        self.current_document: str | None = None
        self.canvas_writes: list[tuple[str, str]] = []  # (node id, textdoc_id), thread order
        self.canvas_texts: list[str] = []  # every text a document ever had (for dead checks)
        self.canvas_failed_calls = 0

    # -- primitives ---------------------------------------------------------------------------

    def chance(self, feature: Feature) -> bool:
        rate = self.config.rate(feature)
        return rate > 0.0 and self.rng.random() < rate

    def tag(self) -> str:
        self.tag_counter += 1
        return f"(#{self.index}.{self.tag_counter})"

    def tick(self, low: float = 2.0, high: float = 90.0) -> float:
        self.time += low + self.rng.random() * (high - low)
        return round(self.time, 6)

    def text(self, chars: int) -> str:
        if self.chance(Feature.HUGE_MESSAGES):
            self.features.add(Feature.HUGE_MESSAGES)
            chars = HUGE_MESSAGE_CHARS
        body, used_unicode = self.pool.text(self.rng, chars, self.unicode_rate)
        if used_unicode:
            self.features.add(Feature.UNICODE)
        return f"{body} {self.tag()}"

    def node_id(self, role: str) -> str:
        value = _uuid(self.rng)
        if role == "user" and self.rng.random() < 0.5:
            value = "aaa" + value[3:]  # client-generated ids start with aaa/bbb
        return value

    def message(
        self,
        role: str,
        content: JSON,
        *,
        name: str | None = None,
        recipient: str = "all",
        hidden: bool = False,
        create_time: float | None = None,
        metadata: JSON | None = None,
        weight: float = 1.0,
        end_turn: bool | None = None,
        status: str = "finished_successfully",
        channel: str | None = None,
    ) -> JSON:
        node_metadata: JSON = {}
        if hidden:
            node_metadata["is_visually_hidden_from_conversation"] = True
        if metadata:
            node_metadata.update(metadata)
        node_metadata.setdefault("request_id", f"{self.rng.getrandbits(64):016x}-IAD")
        node_metadata.setdefault("message_type", None)
        node_metadata.setdefault("timestamp_", "absolute")
        if role == "assistant":
            node_metadata.setdefault("model_slug", self.model)
            node_metadata.setdefault("default_model_slug", self.model)
            node_metadata.setdefault("finish_details", {"type": "stop", "stop_tokens": [200002]})
            node_metadata.setdefault("is_complete", True)
            node_metadata.setdefault("citations", [])
            node_metadata.setdefault("content_references", [])
        message: JSON = {
            "id": "",
            "author": {"role": role, "name": name, "metadata": {}},
            "create_time": create_time,
            "update_time": None,
            "content": content,
            "status": status,
            "end_turn": end_turn,
            "weight": 0.0 if hidden else weight,
            "metadata": node_metadata,
            "recipient": recipient,
            "channel": channel,
        }
        if self.chance(Feature.MISSING_METADATA):
            del message["metadata"]
            self.features.add(Feature.MISSING_METADATA)
        self.content_types.add(str(content.get("content_type")))
        return message

    def add(
        self,
        parent: str | None,
        message: JSON | None,
        *,
        node_id: str | None = None,
        dialogue_parts: tuple[str, ...] | None = None,
        hidden_texts: tuple[str, ...] = (),
    ) -> str:
        if node_id is None:
            role = message["author"]["role"] if message else "root"
            node_id = self.node_id(role)
        if message is not None:
            message["id"] = node_id
            if parent is not None and "metadata" in message:
                message["metadata"].setdefault("parent_id", parent)
        dialogue = None
        if dialogue_parts is not None and message is not None:
            dialogue = ExpectedMessage(
                role=message["author"]["role"],
                node_ids=(node_id,),
                parts=tuple(_strip_markers(p) for p in dialogue_parts),
                raw_parts=dialogue_parts,
                create_time=message["create_time"],
            )
        self.nodes[node_id] = _Node(node_id, parent, message, dialogue, hidden_texts)
        self.order.append(node_id)
        if parent is not None:
            self.nodes[parent].children.append(node_id)
        text_bytes = sum(len(p) for p in dialogue_parts or ()) + sum(len(t) for t in hidden_texts)
        self.size += NODE_OVERHEAD_BYTES + text_bytes
        return node_id

    # -- user messages ------------------------------------------------------------------------

    def user_message(self, parent: str, voice: bool, chars: int) -> str:
        if voice:
            return self.voice_message(parent, "user", chars)
        if self.chance(Feature.IMAGES):
            return self.image_message(parent, chars)
        if self.chance(Feature.UNKNOWN_CONTENT_TYPES):
            return self.unknown_message(parent, "user", chars)
        text = self.text(chars)
        metadata = {
            "selected_github_repos": [],
            "serialization_metadata": {"custom_symbol_offsets": []},
        }
        message = self.message(
            "user",
            {"content_type": "text", "parts": [text]},
            create_time=self.tick(),
            metadata=metadata,
        )
        return self.add(parent, message, dialogue_parts=(text,))

    def image_message(self, parent: str, chars: int) -> str:
        self.features.add(Feature.IMAGES)
        modern = self.rng.random() < 0.3
        file_id = (
            f"file_{self.rng.getrandbits(128):032x}"
            if modern
            else f"file-{self.rng.getrandbits(96):024x}"
        )
        scheme = "sediment://" if modern else "file-service://"
        width, height = self.rng.choice(((1024, 768), (768, 1024), (1536, 1152)))
        image = {
            "content_type": "image_asset_pointer",
            "asset_pointer": scheme + file_id,
            "size_bytes": self.rng.randint(40_000, 900_000),
            "width": width,
            "height": height,
            "fovea": None,
            "metadata": {"dalle": None, "gizmo": None, "generation": None, "sanitized": True},
        }
        parts: list[Any] = [image]
        expected = ["[image]"]
        if self.rng.random() < 0.7:
            text = self.text(chars)
            parts.append(text)
            expected.append(text)
        self.image_parts += 1
        attachment = {
            "id": file_id,
            "size": image["size_bytes"],
            "name": "IMG_2231.jpeg",
            "mime_type": "image/jpeg",
            "width": width,
            "height": height,
        }
        message = self.message(
            "user",
            {"content_type": "multimodal_text", "parts": parts},
            create_time=self.tick(),
            metadata={"attachments": [attachment]},
        )
        return self.add(parent, message, dialogue_parts=tuple(expected))

    def voice_message(self, parent: str, role: str, chars: int) -> str:
        self.features.add(Feature.VOICE)
        text = self.text(min(chars, 600))
        pointer = {
            "content_type": "audio_asset_pointer",
            "asset_pointer": f"sediment://file_{self.rng.getrandbits(128):032x}",
            "size_bytes": self.rng.randint(50_000, 500_000),
            "format": "wav",
            "metadata": {"start_timestamp": None, "end_timestamp": None, "pretokenized_vq": None},
        }
        parts: list[Any] = [
            {
                "content_type": "audio_transcription",
                "text": text,
                "direction": "in" if role == "user" else "out",
                "decoding_id": None,
            },
            pointer,
        ]
        if role == "user" and self.rng.random() < 0.3:
            # The voice turn's own pointer: audio only, though its type name says video.
            parts.append(
                {
                    "content_type": "real_time_user_audio_video_asset_pointer",
                    "frames_asset_pointers": [],
                    "video_container_asset_pointer": None,
                    "audio_asset_pointer": pointer,
                    "audio_start_timestamp": 1.5,
                }
            )
        expected: tuple[str, ...] = (text,)
        metadata: JSON = {"voice_mode_message": True}
        if role == "user" and self.chance(Feature.VOICE_VIDEO):
            # The camera was on: video frames, which the UI shows as pictures.
            self.features.add(Feature.VOICE_VIDEO)
            frames = [
                f"sediment://file_{self.rng.getrandbits(128):032x}"
                for _ in range(self.rng.randint(1, 3))
            ]
            parts.append(
                {
                    "content_type": "real_time_user_audio_video_asset_pointer",
                    "expiry_datetime": "2026-04-28T23:10:53.486854+00:00",
                    "frames_asset_pointers": frames,
                    "video_container_asset_pointer": None,
                    "audio_asset_pointer": pointer,
                    "audio_start_timestamp": 3.25,
                }
            )
            metadata["real_time_audio_has_video"] = True
            expected = (text, "[image]")
            self.image_parts += 1
        self.voice_parts += 1
        message = self.message(
            role,
            {"content_type": "multimodal_text", "parts": parts},
            create_time=self.tick(),
            metadata=metadata,
        )
        return self.add(parent, message, dialogue_parts=expected)

    def unknown_message(self, parent: str, role: str, chars: int) -> str:
        self.features.add(Feature.UNKNOWN_CONTENT_TYPES)
        text = self.text(chars)
        if self.rng.random() < 0.5:
            content: JSON = {"content_type": "future_rich_note", "text": text, "format": "md"}
        else:
            content = {"content_type": "novel_parts_type", "parts": [text]}
        self.unknown_types.append(content["content_type"])
        message = self.message(role, content, create_time=self.tick())
        return self.add(parent, message, dialogue_parts=(text,))

    # -- assistant turns ----------------------------------------------------------------------

    def assistant_turn(self, parent: str, voice: bool) -> str:
        """An answer, possibly preceded by tool traffic or reasoning; returns the last node."""
        if voice:
            return self.voice_message(parent, "assistant", 800)
        node = parent
        roll = self.rng.random
        if self.chance(Feature.REASONING):
            node = self.reasoning(node)
        if self.chance(Feature.BIO_MEMORY):
            node = self.bio_write(node)
        if self.chance(Feature.PYTHON_TOOL):
            return self.python_flow(node)
        if self.chance(Feature.BROWSING):
            return self.browsing_flow(node)
        if self.chance(Feature.FILE_SEARCH):
            return self.file_search_flow(node)
        if self.chance(Feature.IMAGE_GENERATION):
            return self.image_generation_flow(node)
        if self.chance(Feature.CANVAS):
            return self.canvas_flow(node)
        if self.chance(Feature.UNKNOWN_CONTENT_TYPES):
            return self.unknown_message(node, "assistant", 600)
        chars = int(300 + roll() * roll() * 4000)
        return self.answer(node, chars)

    def answer(
        self, parent: str, chars: int, *, citations: bool = False, metadata: JSON | None = None
    ) -> str:
        text = self.text(chars)
        if citations:
            text = self.cite(text)
        elif self.chance(Feature.HIGHLIGHTS):
            text = self.highlight(text)
        if self.chance(Feature.CONTINUATIONS) and len(text) > 200:
            self.features.add(Feature.CONTINUATIONS)
            # Cut at a space: markers and tags contain none, so neither is split.
            cut = text.find(" ", len(text) // 2)
            cut = cut + 1 if cut > 0 else len(text) // 2
            first, rest = text[:cut], text[cut:]
            head = self.message(
                "assistant",
                {"content_type": "text", "parts": [first]},
                create_time=self.tick(),
                end_turn=False,
                metadata={"finish_details": {"type": "max_tokens"}},
            )
            node = self.add(parent, head, dialogue_parts=(first,))
            tail = self.message(
                "assistant",
                {"content_type": "text", "parts": [rest]},
                create_time=self.tick(),
                end_turn=True,
                metadata=metadata,
            )
            return self.add(node, tail, dialogue_parts=(rest,))
        message = self.message(
            "assistant",
            {"content_type": "text", "parts": [text]},
            create_time=self.tick(),
            end_turn=True,
            metadata=metadata,
            channel="final" if self.rng.random() < 0.2 else None,
        )
        return self.add(parent, message, dialogue_parts=(text,))

    def cite(self, text: str) -> str:
        """``text`` with citation markers after some sentences; removing them restores it."""
        rate = self.config.rate(Feature.CITATIONS)
        if rate <= 0 or self.rng.random() >= rate:
            return text
        self.features.add(Feature.CITATIONS)
        pieces = text.split(". ")
        out: list[str] = []
        for number, piece in enumerate(pieces[:-1]):
            marker = ""
            if number % 3 == 0:
                if self.rng.random() < 0.5:
                    marker = f"\ue200cite\ue202turn0search{self.rng.randint(0, 9)}\ue201"
                else:
                    marker = f"\u3010{self.rng.randint(0, 20)}\u2020source\u3011"
            out.append(f"{piece}.{marker} ")
        out.append(pieces[-1])
        return "".join(out)

    def highlight(self, text: str) -> str:
        """``text`` with a highlighted span and an entity marker, and no citation: the UI
        shows the span's words and the entity's name, nothing else."""
        self.features.add(Feature.HIGHLIGHTS)
        body, _, tag = text.rpartition(" ")
        category, name = self.rng.choice(_ENTITIES)
        payload = json.dumps([category, name, ""], separators=(",", ":"))
        entity = f"\ue200entity\ue202{payload}\ue201"
        return f"{entity}: \ue203{body}\ue204\ue206 {tag}"

    def reasoning(self, parent: str) -> str:
        self.features.add(Feature.REASONING)
        summary = self.pool.sentence(self.rng)
        body = self.pool.text(self.rng, 600, 0.0)[0] + " " + self.tag()
        thoughts = self.message(
            "assistant",
            {
                "content_type": "thoughts",
                "thoughts": [
                    {
                        "summary": summary,
                        "content": body,
                        "chunks": [body[:200], body[200:]],
                        "finished": True,
                    }
                ],
                "source_analysis_msg_id": _uuid(self.rng),
            },
            create_time=self.tick(),
            metadata={"reasoning_status": "is_reasoning"},
        )
        node = self.add(parent, thoughts, hidden_texts=(body,))
        seconds = self.rng.randint(2, 40)
        recap_text = f"Thought for {seconds}s"
        recap = self.message(
            "assistant",
            {"content_type": "reasoning_recap", "content": recap_text},
            create_time=self.tick(),
            metadata={"reasoning_status": "reasoning_ended"},
        )
        return self.add(node, recap)

    def bio_write(self, parent: str) -> str:
        self.features.add(Feature.BIO_MEMORY)
        fact = self.rng.choice(self.persona.facts)
        call = self.message(
            "assistant",
            {"content_type": "text", "parts": [fact]},
            recipient="bio",
            create_time=self.tick(),
            end_turn=False,
        )
        self.bio_writes.append(fact)
        node = self.add(parent, call, hidden_texts=(fact,))
        reply = self.message(
            "tool",
            {"content_type": "text", "parts": ["Model set context updated."]},
            name="bio",
            recipient="assistant",
            create_time=self.tick(),
        )
        node = self.add(node, reply)
        if self.rng.random() < 0.3:
            snapshot_text = "\n".join(
                f"{n}. [2025-01-0{n}]. {f}" for n, f in enumerate(self.persona.facts[:4], 1)
            )
            snapshot = self.message(
                "assistant",
                {
                    "content_type": "model_editable_context",
                    "model_set_context": snapshot_text,
                    "repository": None,
                    "repo_summary": None,
                },
                hidden=True,
                create_time=None,
            )
            self.snapshots.append(snapshot_text)
            node = self.add(node, snapshot, hidden_texts=(snapshot_text,))
        return node

    def python_flow(self, parent: str) -> str:
        self.features.add(Feature.PYTHON_TOOL)
        node = parent
        if self.rng.random() < 0.4:  # a short preamble to "all", merged with the final answer
            node = self.answer(node, 120)
        code = self.rng.choice(_CODE_SNIPPETS) + f"# {self.tag()}\n"
        call = self.message(
            "assistant",
            {"content_type": "code", "language": "unknown", "text": code},
            recipient="python",
            create_time=self.tick(),
            end_turn=False,
        )
        node = self.add(node, call, hidden_texts=(code,))
        if self.rng.random() < 0.1:
            error = f"Traceback (most recent call last): ValueError: bad input {self.tag()}"
            result = self.message(
                "tool",
                {"content_type": "system_error", "name": "tool_error", "text": error},
                name="python",
                create_time=self.tick(),
            )
            return self.answer(self.add(node, result, hidden_texts=(error,)), 400)
        output = f"[{', '.join(str(self.rng.randint(0, 999)) for _ in range(8))}] {self.tag()}"
        aggregate = {
            "status": "success",
            "run_id": _uuid(self.rng),
            "start_time": self.time,
            "update_time": self.time + 1.2,
            "code": code,
            "end_time": self.time + 1.3,
            "final_expression_output": output,
            "in_kernel_exception": None,
            "system_exception": None,
            "messages": [
                {
                    "message_type": "stream",
                    "time": self.time,
                    "stream_name": "stdout",
                    "sender": "server",
                    "text": output,
                }
            ],
            "jupyter_messages": [
                {
                    "msg_type": "status",
                    "parent_header": {"msg_id": _uuid(self.rng), "version": "5.3"},
                    "content": {"execution_state": "busy"},
                },
                {
                    "msg_type": "execute_input",
                    "parent_header": {"msg_id": _uuid(self.rng), "version": "5.3"},
                },
                {
                    "msg_type": "stream",
                    "parent_header": {"msg_id": _uuid(self.rng), "version": "5.3"},
                    "content": {"name": "stdout", "text": output},
                },
            ],
            "timeout_triggered": None,
        }
        result = self.message(
            "tool",
            {"content_type": "execution_output", "text": output},
            name="python",
            create_time=self.tick(),
            metadata={"is_complete": True, "aggregate_result": aggregate},
        )
        node = self.add(node, result, hidden_texts=(output,))
        return self.answer(node, 900)

    def search_metadata(self, query: str) -> JSON:
        if not self.chance(Feature.METADATA_BULK):
            return {}
        self.features.add(Feature.METADATA_BULK)
        groups: list[JSON] = []
        refs: list[JSON] = []
        for g in range(self.rng.randint(2, 4)):
            domain = self.rng.choice(_DOMAINS)
            entries = []
            for e in range(self.rng.randint(2, 6)):
                title = self.pool.sentence(self.rng)
                entry = {
                    "type": "search_result",
                    "url": f"https://{domain}/{self.rng.getrandbits(40):x}",
                    "title": title,
                    "snippet": self.pool.sentence(self.rng) + " " + self.pool.sentence(self.rng),
                    "ref_id": {"turn_index": 0, "ref_type": "search", "ref_index": g * 6 + e},
                    "content_type": None,
                    "pub_date": round(self.time - 86400 * self.rng.randint(1, 900), 1),
                    "attributions": None,
                    "attributions_debug": None,
                }
                entries.append(entry)
            groups.append({"type": "search_result_group", "domain": domain, "entries": entries})
            self.size += SEARCH_ENTRY_BYTES * len(entries)
            refs.append(
                {
                    "matched_text": f"\ue200cite\ue202turn0search{g}\ue201",
                    "start_idx": 100 * g,
                    "end_idx": 100 * g + 24,
                    "safe_urls": [entries[0]["url"]],
                    "refs": [],
                    "alt": f"([{domain}]({entries[0]['url']}))",
                    "prompt_text": None,
                    "type": "grouped_webpages",
                    "items": [
                        {
                            "title": entries[0]["title"],
                            "url": entries[0]["url"],
                            "pub_date": None,
                            "snippet": entries[0]["snippet"],
                            "attribution_segments": None,
                            "supporting_websites": [],
                            "refs": [{"turn_index": 0, "ref_type": "search", "ref_index": g}],
                            "hue": None,
                            "attributions": None,
                            "attribution": domain,
                        }
                    ],
                    "fallback_items": None,
                    "status": "done",
                    "error": None,
                    "style": None,
                }
            )
        return {
            "search_source": "composer_auto",
            "client_reported_search_source": "composer_auto",
            "search_result_groups": groups,
            "content_references": refs,
            "citations": [
                {
                    "start_ix": 10,
                    "end_ix": 30,
                    "citation_format_type": "tether_og",
                    "metadata": {
                        "type": "webpage",
                        "title": query,
                        "url": groups[0]["entries"][0]["url"],
                        "text": "",
                        "pub_date": None,
                        "extra": None,
                    },
                }
            ],
            "search_queries": [{"type": "search", "q": query}],
            "search_display_string": "Searched the web",
        }

    def browsing_flow(self, parent: str) -> str:
        self.features.add(Feature.BROWSING)
        query = self.pool.sentence(self.rng)
        modern = self.rng.random() < 0.6
        tool = "web.run" if modern else "browser"
        call_text = (
            (json.dumps({"search_query": [{"q": query}]}) if modern else f'search("{query}")')
            + " "
            + self.tag()
        )
        call = self.message(
            "assistant",
            {"content_type": "code", "language": "unknown", "text": call_text},
            recipient=tool,
            create_time=self.tick(),
            end_turn=False,
        )
        node = self.add(parent, call, hidden_texts=(call_text,))
        if modern:
            for _ in range(self.rng.randint(1, 3)):
                page = self.pool.text(self.rng, 1500, 0.0)[0] + " " + self.tag()
                domain = self.rng.choice(_DOMAINS)
                content: JSON = {
                    "content_type": "sonic_webpage",
                    "url": f"https://{domain}/a",
                    "domain": domain,
                    "title": self.pool.sentence(self.rng),
                    "text": page,
                    "snippet": page[:160],
                    "pub_date": None,
                    "crawl_date": None,
                    "ref_id": "turn0search0",
                }
                result = self.message(
                    "tool", content, name=tool, create_time=self.tick(), hidden=True
                )
                node = self.add(node, result, hidden_texts=(page,))
        else:
            display = (
                "\n".join(
                    f"# \u3010{i}\u2020{self.pool.sentence(self.rng)}"
                    f"\u2020{self.rng.choice(_DOMAINS)}\u3011\n"
                    f"{self.pool.sentence(self.rng)}"
                    for i in range(self.rng.randint(3, 8))
                )
                + " "
                + self.tag()
            )
            content = {
                "content_type": "tether_browsing_display",
                "result": display,
                "summary": None,
                "assets": [],
            }
            result = self.message(
                "tool",
                content,
                name=tool,
                create_time=self.tick(),
                metadata={
                    "_cite_metadata": {
                        "citation_format": {"name": "tether_og"},
                        "metadata_list": [],
                    }
                },
            )
            node = self.add(node, result, hidden_texts=(display,))
        return self.answer(node, 1500, citations=True, metadata=self.search_metadata(query))

    def file_search_flow(self, parent: str) -> str:
        self.features.add(Feature.FILE_SEARCH)
        query = self.pool.sentence(self.rng)
        call_text = f'msearch(["{query}"]) {self.tag()}'
        call = self.message(
            "assistant",
            {"content_type": "code", "language": "unknown", "text": call_text},
            recipient="myfiles_browser",
            create_time=self.tick(),
            end_turn=False,
        )
        node = self.add(parent, call, hidden_texts=(call_text,))
        quote_text = self.pool.text(self.rng, 500, 0.0)[0] + " " + self.tag()
        quote = self.message(
            "tool",
            {
                "content_type": "tether_quote",
                "url": f"file-{self.rng.getrandbits(96):024x}",
                "domain": "notes.pdf",
                "text": quote_text,
                "title": "notes.pdf",
                "tether_id": None,
            },
            name="myfiles_browser",
            create_time=self.tick(),
        )
        node = self.add(node, quote, hidden_texts=(quote_text,))
        return self.answer(node, 800, citations=True)

    def canvas_flow(self, parent: str) -> str:
        """Canvas work: a document created, or the current one edited, between two answers.

        Calls on a dead branch never change the documents' state on the thread (they are
        what the linearizer must ignore). The state is replayed here with Python's ``re`` on
        the generator's own, harmless patterns, so the facts hold the exact final text.
        """
        self.features.add(Feature.CANVAS)
        node = parent
        if self.rng.random() < 0.5:
            node = self.answer(node, 120)
        live = self.dead_depth == 0
        if not self.documents or self.rng.random() < 0.35:
            node = self.canvas_create(node, live)
        else:
            node = self.canvas_update(node, live)
        return self.answer(node, 200)

    def canvas_text(self) -> str:
        paragraphs = [self.text(int(80 + self.rng.random() * 500)) for _ in range(3)]
        text = "\n\n".join(paragraphs)
        self.canvas_texts.append(text)
        return text

    def canvas_call(self, parent: str, recipient: str, arguments: JSON) -> str:
        encoded = json.dumps(arguments, ensure_ascii=False)
        if self.rng.random() < 0.3:  # 2024 exports: a "code" content with the JSON as its text
            content: JSON = {"content_type": "code", "language": "json", "text": encoded}
        else:  # 2025+: a text content with the JSON as its only part
            content = {"content_type": "text", "parts": [encoded]}
        call = self.message(
            "assistant", content, recipient=recipient, create_time=self.tick(), end_turn=False
        )
        return self.add(parent, call, hidden_texts=())

    def canvas_reply(
        self, parent: str, name: str, textdoc_id: str | None, title: str, *, failed: bool = False
    ) -> str:
        command = name.split(".", 1)[1]
        metadata: JSON = {"command": command}
        if failed:
            text = (
                "Failed with error. Fix the error and try again before replying to the user.\n\n"
                "updates.0.pattern: pattern not found in the document: /x/ pattern must be a "
                "python regular expression with valid escape sequences"
            )
        elif self.rng.random() < 0.3:  # 2024 exports: the id in JSON text, no canvas metadata
            verb = "created" if command == "create_textdoc" else "updated"
            text = json.dumps(
                {"result": f"Successfully {verb} text document", "textdoc_id": textdoc_id}
            )
        else:
            if command == "create_textdoc":
                text = (
                    f"Successfully created text document '{title}' which will be referenced in "
                    f"all future messages with the unique identifier textdoc_id: '{textdoc_id}'"
                )
            else:
                text = f"Successfully updated text document with textdoc_id '{textdoc_id}'"
            metadata["canvas"] = {
                "create_source": "system_hint_canvas",
                "textdoc_id": textdoc_id,
                "textdoc_type": "document",
                "title": title,
                "version": self.rng.randint(1, 9),
            }
        reply = self.message(
            "tool",
            {"content_type": "text", "parts": [text]},
            name=name,
            create_time=self.tick(),
            metadata=metadata,
            weight=0.0,
        )
        return self.add(parent, reply)

    def canvas_create(self, parent: str, live: bool) -> str:
        name = self.pool.sentence(self.rng)[:40].rstrip(" .") or "Draft"
        text = self.canvas_text()
        textdoc_id = f"{self.rng.getrandbits(128):032x}"
        arguments = {"name": name, "type": "document", "content": text}
        node = self.canvas_call(parent, "canmore.create_textdoc", arguments)
        if live:
            self.documents[textdoc_id] = _CanvasDoc(name, text)
            self.current_document = textdoc_id
            self.canvas_writes.append((node, textdoc_id))
        return self.canvas_reply(node, "canmore.create_textdoc", textdoc_id, name.title())

    def canvas_update(self, parent: str, live: bool) -> str:
        # Mostly the document written last; sometimes another, named only by the reply.
        textdoc_id = self.current_document
        if len(self.documents) > 1 and self.rng.random() < 0.3:
            textdoc_id = self.rng.choice(sorted(self.documents))
        assert textdoc_id is not None
        document = self.documents[textdoc_id]
        roll = self.rng.random()
        update: JSON
        if roll < 0.1:
            # A call ChatGPT refused: nothing changes.
            update = {"pattern": "no such passage", "multiple": False, "replacement": "x"}
            node = self.canvas_call(parent, "canmore.update_textdoc", {"updates": [update]})
            self.canvas_failed_calls += live
            return self.canvas_reply(
                node, "canmore.update_textdoc", None, document.name, failed=True
            )
        paragraphs = document.text.split("\n\n")
        chosen = self.rng.choice(paragraphs)
        fresh = self.canvas_text()
        if roll < 0.5:
            # The whole rewrite the model is told to use.
            update = {"pattern": ".*", "multiple": False, "replacement": _template(fresh)}
        elif roll < 0.8 or len(chosen) < 40:
            # A quoted passage, escaped.
            update = {"pattern": re.escape(chosen), "replacement": _template(fresh)}
        else:
            # The start and end of a passage with a lazy gap between, keeping the middle.
            update = {
                "pattern": re.escape(chosen[:15]) + "(.*?)" + re.escape(chosen[-15:]),
                "multiple": self.rng.random() < 0.5,
                "replacement": _template(fresh[:40]) + "\\1" + _template(fresh[-40:]),
            }
        node = self.canvas_call(parent, "canmore.update_textdoc", {"updates": [update]})
        if live:
            compiled = re.compile(update["pattern"], re.DOTALL)
            document.text = compiled.sub(
                lambda match: match.expand(update["replacement"]),
                document.text,
                count=0 if update.get("multiple") else 1,
            )
            self.canvas_texts.append(document.text)
            self.current_document = textdoc_id
            self.canvas_writes.append((node, textdoc_id))
        return self.canvas_reply(node, "canmore.update_textdoc", textdoc_id, document.name)

    def image_generation_flow(self, parent: str) -> str:
        self.features.add(Feature.IMAGE_GENERATION)
        prompt = self.pool.sentence(self.rng) + " " + self.tag()
        call_text = json.dumps({"prompt": prompt, "size": "1024x1024"})
        call = self.message(
            "assistant",
            {"content_type": "code", "language": "json", "text": call_text},
            recipient="dalle.text2im",
            create_time=self.tick(),
            end_turn=False,
        )
        node = self.add(parent, call, hidden_texts=(call_text,))
        image = {
            "content_type": "image_asset_pointer",
            "asset_pointer": f"sediment://file_{self.rng.getrandbits(128):032x}",
            "size_bytes": 350_000,
            "width": 1024,
            "height": 1024,
            "fovea": None,
            "metadata": {
                "dalle": {
                    "gen_id": f"{self.rng.getrandbits(64):x}",
                    "prompt": prompt,
                    "seed": self.rng.getrandbits(31),
                    "parent_gen_id": None,
                    "edit_op": None,
                    "serialization_title": "DALL-E generation metadata",
                },
                "gizmo": None,
                "generation": None,
                "sanitized": False,
            },
        }
        result = self.message(
            "tool",
            {"content_type": "multimodal_text", "parts": [image]},
            name="dalle.text2im",
            create_time=self.tick(),
        )
        node = self.add(node, result, hidden_texts=(prompt,))
        return self.answer(node, 200)

    # -- conversation skeleton ----------------------------------------------------------------

    def preamble(self) -> str:
        """Root, hidden system node, custom instructions and user-system message."""
        root_id = "client-created-root" if self.rng.random() < 0.3 else _uuid(self.rng)
        root = self.add(None, None, node_id=root_id)
        node = root
        if self.chance(Feature.HIDDEN_SYSTEM):
            self.features.add(Feature.HIDDEN_SYSTEM)
            system = self.message(
                "system", {"content_type": "text", "parts": [""]}, hidden=True, end_turn=True
            )
            node = self.add(node, system)
            # Real exports list the hidden system node before the root.
            self.order.insert(self.order.index(root), self.order.pop())
        if self.chance(Feature.CUSTOM_INSTRUCTIONS):
            self.features.add(Feature.CUSTOM_INSTRUCTIONS)
            version = self.persona.instructions_at(self.create_time)
            self.custom = version
            profile = (
                "The user provided the following information about themselves. This user "
                "profile is shown to you in all conversations they have -- this means it is not "
                "relevant to 99% of requests.\nBefore answering, quietly think about whether the "
                "user's request is "
                '"directly related", "related", "tangentially related", or "not related" to '
                f"the user profile provided.\nUser profile:\n```{version.about_user}```"
            )
            instructions = (
                "The user provided the additional info about how they would like you to respond:\n"
                f"```{version.about_model}```"
            )
            message = self.message(
                "user",
                {
                    "content_type": "user_editable_context",
                    "user_profile": profile,
                    "user_instructions": instructions,
                },
                hidden=True,
                metadata={
                    "user_context_message_data": {
                        "about_user_message": version.about_user,
                        "about_model_message": version.about_model,
                    },
                    "is_user_system_message": True,
                },
            )
            node = self.add(node, message, hidden_texts=(version.about_user, version.about_model))
        if self.chance(Feature.USER_SYSTEM_MESSAGES):
            self.features.add(Feature.USER_SYSTEM_MESSAGES)
            text = f"{self.rng.choice(self.persona.facts)} Always answer kindly. {self.tag()}"
            self.user_system.append(text)
            message = self.message(
                "system",
                {"content_type": "text", "parts": [text]},
                metadata={"is_user_system_message": True},
            )
            node = self.add(node, message, hidden_texts=(text,))
        return node

    def exchange(self, parent: str, voice: bool, user_chars: int) -> str:
        """A user message and the answer, with edit/regenerate branches; returns the last node."""
        branch = self.chance(Feature.BRANCHES)
        if branch and self.rng.random() < 0.5:
            # Edit: the original user message (and its answer) become a dead branch.
            self.features.add(Feature.BRANCHES)
            self.dead_depth += 1
            dead_user = self.user_message(parent, voice, user_chars)
            dead_end = self.assistant_turn(dead_user, voice)
            if self.rng.random() < 0.3:
                self.exchange(dead_end, voice, user_chars)
            self.dead_depth -= 1
            self.tick(30, 600)
        user = self.user_message(parent, voice, user_chars)
        if branch and self.rng.random() < 0.5:
            # Regenerate: the first answer becomes a dead branch.
            self.features.add(Feature.BRANCHES)
            self.dead_depth += 1
            self.assistant_turn(user, voice)
            self.dead_depth -= 1
            self.tick(5, 120)
        return self.assistant_turn(user, voice)


def generate_conversation(
    rng: random.Random,
    config: GeneratorConfig,
    index: int,
    *,
    pool: TextPool | None = None,
    persona: Persona | None = None,
    extra_turns: int = 0,
) -> GeneratedConversation:
    """One conversation. ``rng`` drives it; ``conversation_rng(config, index)`` is the usual one.

    ``extra_turns`` appends exchanges after the usual end (used for duplicate copies: with the
    same ``rng`` state, the conversation is identical up to those turns).
    """
    pool = pool or TextPool(config.seed)
    persona = persona or Persona.for_seed(config.seed, config.now)
    b = _Builder(rng, config, pool, persona, index)
    conversation_id = _uuid(rng)
    target = int(
        math.exp(
            math.log(config.median_conversation_bytes) + config.size_sigma * rng.gauss(0.0, 1.0)
        )
    )
    target = max(MIN_CONVERSATION_BYTES, min(MAX_CONVERSATION_BYTES, target))
    many = b.chance(Feature.MANY_MESSAGES)
    voice = b.chance(Feature.VOICE)
    node = b.preamble()
    turns = 0
    while True:
        user_chars = int(40 + rng.random() * rng.random() * 900)
        node = b.exchange(node, voice, user_chars if not many else 60)
        turns += 1
        if many:
            b.features.add(Feature.MANY_MESSAGES)
            if turns >= MANY_MESSAGES_TURNS:
                break
        elif b.size >= target:
            break
    for _ in range(extra_turns):
        node = b.exchange(node, voice, 200)
    return _finish(b, conversation_id, node)


def _finish(b: _Builder, conversation_id: str, leaf: str) -> GeneratedConversation:
    rng = b.rng
    config = b.config
    path: list[str] = []
    cursor: str | None = leaf
    while cursor is not None:
        path.append(cursor)
        cursor = b.nodes[cursor].parent
    path.reverse()
    on_path = set(path)

    # Each Canvas document is expected once, where it was last written on the thread.
    last_write = {textdoc_id: node_id for node_id, textdoc_id in b.canvas_writes}
    placed = {node_id: textdoc_id for textdoc_id, node_id in last_write.items()}
    canvas_documents: list[str] = []

    messages: list[ExpectedMessage] = []
    hidden: list[str] = []
    for node_id in path:
        node = b.nodes[node_id]
        hidden.extend(node.hidden_texts)
        if node_id in placed:
            document = b.documents[placed[node_id]]
            text = f"[canvas: {' '.join(document.name.split())}]\n{document.text}"
            canvas_documents.append(text)
            assert node.message is not None
            messages.append(
                ExpectedMessage(
                    role="assistant",
                    node_ids=(node_id,),
                    parts=(text,),
                    raw_parts=(document.text,),
                    create_time=node.message["create_time"],
                    canvas=True,
                )
            )
        if node.dialogue is None:
            continue
        if (
            messages
            and messages[-1].role == "assistant"
            and not messages[-1].canvas
            and node.dialogue.role == "assistant"
        ):
            last = messages[-1]
            messages[-1] = replace(
                last,
                node_ids=last.node_ids + node.dialogue.node_ids,
                parts=last.parts + node.dialogue.parts,
                raw_parts=last.raw_parts + node.dialogue.raw_parts,
            )
        else:
            messages.append(node.dialogue)
    # The tags of every text a document had but no longer has must not be anywhere.
    final_tags = set(_TAG.findall("\n".join(canvas_documents)))
    hidden.extend(
        tag for text in b.canvas_texts for tag in _TAG.findall(text) if tag not in final_tags
    )
    dead = frozenset(n for n in b.nodes if n not in on_path)
    dead_texts = tuple(
        p for n in dead if (d := b.nodes[n].dialogue) is not None for p in d.parts if p != "[image]"
    )

    update_time = round(b.time + 1.0 + rng.random() * 30, 6)
    title: str | None = b.pool.sentence(rng)[:60]
    title_state = "ok"
    if b.chance(Feature.NULL_TITLES):
        b.features.add(Feature.NULL_TITLES)
        title = None
        title_state = "absent" if rng.random() < 0.3 else "null"

    state_roll = rng.random()
    missing_rate = config.rate(Feature.MISSING_CURRENT_NODE)
    dangling_rate = config.rate(Feature.DANGLING_CURRENT_NODE)
    current: str | None = leaf
    state = "ok"
    if state_roll < missing_rate:
        current, state = None, "missing"
        b.features.add(Feature.MISSING_CURRENT_NODE)
    elif state_roll < missing_rate + dangling_rate:
        current, state = _uuid(rng), "dangling"
        b.features.add(Feature.DANGLING_CURRENT_NODE)

    has_children = not b.chance(Feature.MISSING_CHILDREN)
    if not has_children:
        b.features.add(Feature.MISSING_CHILDREN)
    order = list(b.order)
    if b.chance(Feature.SHUFFLED_MAPPING):
        b.features.add(Feature.SHUFFLED_MAPPING)
        rng.shuffle(order)
    mapping: JSON = {}
    for node_id in order:
        node = b.nodes[node_id]
        entry: JSON = {"id": node_id, "message": node.message, "parent": node.parent}
        if has_children:
            entry["children"] = list(node.children)
        mapping[node_id] = entry

    data: JSON = {}
    if title_state != "absent":
        data["title"] = title
    data.update(
        {
            "create_time": round(b.create_time, 6),
            "update_time": update_time,
            "mapping": mapping,
            "moderation_results": [],
        }
    )
    if state != "missing":
        data["current_node"] = current
    gizmo = f"g-{rng.getrandbits(40):x}" if rng.random() < 0.05 else None
    data.update(
        {
            "plugin_ids": None,
            "conversation_id": conversation_id,
            "conversation_template_id": gizmo,
            "gizmo_id": gizmo,
            "gizmo_type": "gpt" if gizmo else None,
            "is_archived": rng.random() < 0.05,
            "is_starred": None,
            "safe_urls": [],
            "blocked_urls": [],
            "default_model_slug": b.model if rng.random() < 0.72 else None,
            "conversation_origin": None,
            "voice": None,
            "async_status": None,
            "disabled_tool_ids": [],
            "is_do_not_remember": False,
            "memory_scope": "global_enabled",
            "sugar_item_id": None,
            "is_study_mode": False,
            "owner": None,
            "id": conversation_id,
        }
    )
    has_id = not lacks_id(config, b.index)
    if not has_id:
        b.features.add(Feature.MISSING_ID)
        del data["id"], data["conversation_id"]
    facts = ConversationFacts(
        id=conversation_id,
        index=b.index,
        title=title,
        create_time=data["create_time"],
        update_time=update_time,
        current_node=current,
        current_node_state=state,
        expected_leaf=leaf,
        path=tuple(path),
        dead_branch_nodes=dead,
        messages=tuple(messages),
        dead_texts=dead_texts,
        hidden_texts=tuple(t for t in hidden if t),
        custom_instructions=b.custom,
        bio_writes=tuple(b.bio_writes),
        memory_snapshots=tuple(b.snapshots),
        user_system_messages=tuple(b.user_system),
        unknown_content_types=tuple(
            t
            for n in path
            if (m := b.nodes[n].message) is not None
            and (t := str(m["content"].get("content_type"))) in b.unknown_types
        ),
        content_types=frozenset(b.content_types),
        features=frozenset(b.features),
        node_count=len(b.nodes),
        has_children=has_children,
        image_parts=b.image_parts,
        voice_parts=b.voice_parts,
        has_id=has_id,
        canvas_documents=tuple(canvas_documents),
        canvas_failed_calls=b.canvas_failed_calls,
    )
    return GeneratedConversation(data, facts)


def lacks_id(config: GeneratorConfig, index: int) -> bool:
    """Whether conversation ``index`` is written without an id: a function of the seed and the
    index alone, so both copies of a duplicated conversation agree."""
    rate = config.rate(Feature.MISSING_ID)
    return rate > 0.0 and random.Random(f"{config.seed}:missing-id:{index}").random() < rate


def conversation_rng(config: GeneratorConfig, index: int) -> random.Random:
    """The random source of conversation ``index``: independent of every other conversation."""
    return random.Random(f"{config.seed}:conversation:{index}")


# --------------------------------------------------------------------------------------------
# Whole exports


def iter_export(
    config: GeneratorConfig, *, json_bytes_so_far: list[int] | None = None
) -> Iterator[GeneratedConversation]:
    """The export's conversations in file order, duplicates included.

    Stops when ``config.conversations`` unique conversations were made or, for a size target,
    when ``json_bytes_so_far[0]`` reaches ``config.target_bytes``: the writer keeps that count
    (it knows the bytes it wrote); without it, the JSON size of each conversation is counted
    here. Without either limit it yields 100 conversations.
    """
    own_count = json_bytes_so_far is None
    counter = [0] if json_bytes_so_far is None else json_bytes_so_far
    pool = TextPool(config.seed)
    persona = Persona.for_seed(config.seed, config.now)
    plan_rng = random.Random(f"{config.seed}:export")
    pending: list[tuple[int, int, DuplicateKind, bool]] = []  # due position, index, kind, newer
    limit = config.conversations
    if limit is None and config.target_bytes is None:
        limit = 100
    position = 0
    index = 0

    def make(index: int, newer: bool, kind: DuplicateKind) -> GeneratedConversation:
        extra = 1 if newer and kind is not DuplicateKind.IDENTICAL else 0
        made = generate_conversation(
            conversation_rng(config, index),
            config,
            index,
            pool=pool,
            persona=persona,
            extra_turns=extra,
        )
        if kind is DuplicateKind.TIE_LARGER and newer:
            # Same update_time as the smaller copy: the tie goes to the larger mapping.
            base = generate_conversation(
                conversation_rng(config, index), config, index, pool=pool, persona=persona
            )
            made.data["update_time"] = base.data["update_time"]
            made = replace(made, facts=replace(made.facts, update_time=base.facts.update_time))
        return replace(made, duplicate=kind)

    while True:
        due = [p for p in pending if p[0] <= position]
        if due:
            item = due[0]
            pending.remove(item)
            position += 1
            yield make(item[1], item[3], item[2])
            continue
        done = (limit is not None and index >= limit) or (
            config.target_bytes is not None and counter[0] >= config.target_bytes
        )
        if done:
            for item in sorted(pending):
                yield make(item[1], item[3], item[2])
            return
        duplicate = config.rate(Feature.DUPLICATES) > 0 and plan_rng.random() < config.rate(
            Feature.DUPLICATES
        )
        if duplicate:
            kind = plan_rng.choice(list(DuplicateKind))
            if lacks_id(config, index):
                # Without an id, only identical copies are recognisably the same conversation.
                kind = DuplicateKind.IDENTICAL
            first_is_newer = kind is DuplicateKind.NEWER_EARLIER
            pending.append((position + plan_rng.randint(1, 40), index, kind, not first_is_newer))
            made = make(index, first_is_newer, kind)
        else:
            made = generate_conversation(
                conversation_rng(config, index), config, index, pool=pool, persona=persona
            )
        if own_count and config.target_bytes is not None:
            counter[0] += len(json.dumps(made.data, ensure_ascii=config.ensure_ascii).encode())
        yield made
        position += 1
        index += 1


def write_export(
    path: str | Path, config: GeneratorConfig, *, collect_facts: bool = False
) -> ExportSummary:
    """Writes an export to ``path`` one conversation at a time; see the module docstring."""
    path = Path(path)
    summary = ExportSummary(path=path, form=config.form, members=[])
    if collect_facts:
        summary.expected = {}
    counter = [0]
    with path.open("wb") as raw:
        if config.form.is_zip:
            _write_zip(raw, config, summary, counter)
        else:
            _write_stream(raw, config, summary, counter)
    summary.file_bytes = path.stat().st_size
    return summary


def _encode(item: GeneratedConversation, config: GeneratorConfig) -> bytes:
    return json.dumps(item.data, ensure_ascii=config.ensure_ascii).encode("utf-8")


def _record(summary: ExportSummary, item: GeneratedConversation, size: int) -> None:
    summary.items_written += 1
    summary.json_bytes += size
    summary.conversation_sizes.append(size)
    facts = item.facts
    if item.duplicate is not None:
        summary.duplicates[facts.id] = item.duplicate
    if summary.expected is not None:
        held = summary.expected.get(facts.id)
        if held is None or _wins(facts, held):
            summary.expected[facts.id] = facts
    summary.unique_conversations = (
        len(summary.expected)
        if summary.expected is not None
        else (summary.items_written - len(summary.duplicates))
    )


def _wins(new: ConversationFacts, held: ConversationFacts) -> bool:
    """Newest update_time, then the larger mapping, then the later one read."""
    if new.update_time != held.update_time:
        return new.update_time > held.update_time
    return new.node_count >= held.node_count


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _write_stream(
    raw: BinaryIO, config: GeneratorConfig, summary: ExportSummary, counter: list[int]
) -> None:
    compressor: gzip.GzipFile | None = None
    out: _Sink = raw
    if config.form is ExportForm.GZIP:
        compressor = gzip.GzipFile(
            filename="conversations.json",
            mode="wb",
            fileobj=raw,
            compresslevel=config.compresslevel,
            mtime=0,
        )
        out = compressor
    summary.members.append("conversations.json")
    try:
        out.write(b'{"conversations": [' if config.form is ExportForm.WRAPPED else b"[")
        first = True
        for item in iter_export(config, json_bytes_so_far=counter):
            encoded = _encode(item, config)
            out.write(encoded if first else b", " + encoded)
            first = False
            _record(summary, item, len(encoded))
            counter[0] = summary.json_bytes if config.size_basis == "json" else raw.tell()
        out.write(b"]}" if config.form is ExportForm.WRAPPED else b"]")
    finally:
        if compressor is not None:
            compressor.close()


def _write_zip(
    raw: BinaryIO, config: GeneratorConfig, summary: ExportSummary, counter: list[int]
) -> None:
    folder = (
        config.folder
        if config.folder is not None
        else ("ChatGPT-export" if config.form is ExportForm.ZIP_FOLDER else "")
    )
    prefix = f"{folder.strip('/')}/" if folder else ""
    sharded = config.form is ExportForm.ZIP_SHARDS
    large = config.target_bytes is not None and config.target_bytes > 1 << 30
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=config.compresslevel) as zf:
        if config.decoys:
            _write_decoys_before(zf, prefix, config)
        member: IO[bytes] | None = None
        member_bytes = 0
        shard = 0
        for item in iter_export(config, json_bytes_so_far=counter):
            encoded = _encode(item, config)
            if member is not None and sharded and member_bytes >= config.shard_bytes:
                member.write(b"]")
                member.close()
                member = None
            if member is None:
                name = (
                    f"{prefix}conversations-{shard:03d}.json"
                    if sharded
                    else f"{prefix}conversations.json"
                )
                shard += 1
                summary.members.append(name)
                member = zf.open(_entry(config, name), "w", force_zip64=large)
                member.write(b"[")
                member_bytes = 0
            else:
                member.write(b", ")
            member.write(encoded)
            member_bytes += len(encoded)
            _record(summary, item, len(encoded))
            counter[0] = summary.json_bytes if config.size_basis == "json" else raw.tell()
        if member is None:  # no conversations at all: still a valid, empty file
            name = f"{prefix}conversations-000.json" if sharded else f"{prefix}conversations.json"
            summary.members.append(name)
            member = zf.open(_entry(config, name), "w")
            member.write(b"[")
        member.write(b"]")
        member.close()
        if config.decoys:
            _write_decoys_after(zf, prefix, config, summary)


def _entry(
    config: GeneratorConfig, name: str, method: int = zipfile.ZIP_DEFLATED
) -> zipfile.ZipInfo:
    """A ZIP entry stamped with the config's ``now`` (not the clock): same seed, same bytes."""
    stamp = time.gmtime(config.now)[:6]
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.compress_type = method
    # The archive's compresslevel only applies to entries named by string; Python 3.11 reads
    # an explicit entry's level from this attribute (3.13 renamed it and kept this alias).
    setattr(info, "_compresslevel", config.compresslevel)  # noqa: B010
    return info


def _write_decoys_before(zf: zipfile.ZipFile, prefix: str, config: GeneratorConfig) -> None:
    rng = random.Random(f"{config.seed}:decoys")
    user = {
        "id": f"user-{rng.getrandbits(96):024x}",
        "email": "sam@example.com",
        "chatgpt_plus_user": True,
        "phone_number": None,
    }
    zf.writestr(_entry(config, f"{prefix}user.json"), json.dumps(user))
    shared = [
        {
            "id": _uuid(rng),
            "conversation_id": _uuid(rng),
            "title": "Shared trip plan",
            "is_anonymous": True,
        }
        for _ in range(3)
    ]
    zf.writestr(_entry(config, f"{prefix}shared_conversations.json"), json.dumps(shared))
    zf.writestr(_entry(config, f"{prefix}message_feedback.json"), "[]")
    zf.writestr(
        _entry(config, f"{prefix}chat.html"),
        "<!DOCTYPE html><html><head><title>ChatGPT Data Export</title></head>"
        '<body><script>var jsonData = [{"title": "not the data you want"}];</script></body></html>',
    )
    media = bytes(rng.getrandbits(8) for _ in range(4096))
    name = f"{prefix}file-{rng.getrandbits(96):024x}-IMG_2231.jpeg"
    zf.writestr(_entry(config, name, zipfile.ZIP_STORED), b"\xff\xd8\xff\xe0" + media)


def _write_decoys_after(
    zf: zipfile.ZipFile, prefix: str, config: GeneratorConfig, summary: ExportSummary
) -> None:
    rng = random.Random(f"{config.seed}:decoys-after")
    manifest = {
        "export_version": 2,
        "files": [{"path": m, "type": "conversations"} for m in summary.members],
    }
    zf.writestr(_entry(config, f"{prefix}export_manifest.json"), json.dumps(manifest))
    settings = json.dumps({"language": "en", "theme": "dark"})
    zf.writestr(_entry(config, f"{prefix}user_settings.json"), settings)
    index = bytes(rng.getrandbits(8) for _ in range(512))
    zf.writestr(_entry(config, f"{prefix}conversations.json.index"), index)
    zf.writestr(_entry(config, f"{prefix}group_chats.json"), json.dumps({"chats": []}))
