"""JSON schemas of every structured answer, the validator that checks answers against them, and
the "wire" form of a schema that the Messages API accepts.

Two forms of each schema exist because the API's structured outputs accept only a subset of
JSON Schema (no ``minLength``/``maxLength``/``maxItems``, ``minItems`` only 0 or 1, no
recursion, ``additionalProperties: false`` on every object; the SDK's own
``transform_schema`` strips the same keywords). So:

* the *full* schema (``OutputSchema.schema``) says everything we require, and our validator
  (``validate``) enforces all of it on every answer;
* the *wire* schema (``OutputSchema.wire_schema``) is what is sent: the unsupported bounds are
  removed and restated in the node's ``description`` ("Between 3 and 7 items.") so the model
  still sees them, and ``minItems`` above 1 becomes 1 so constrained decoding at least
  forbids an empty list.

The validator understands exactly the keywords used here: ``type`` (object, array, string,
integer, number, boolean, null), ``properties``, ``required``, ``additionalProperties``
(false only), ``items``, ``enum``, ``minItems``, ``maxItems``, ``minLength``, ``maxLength``,
``description``, ``title``. A schema using anything else is refused when it is defined
(``SchemaDefinitionError``), so a constraint can never be silently ignored. Problems are
reported as JSON paths and rule names, never with the offending value (answers are personal
data).

Some rules are beyond the schema: ``identity.ai_name`` must be a real name, not empty and not
generic ("Assistant", "AI", "Soul", "ChatGPT"…). ``OutputSchema.semantic_check`` runs them
after the schema passes; a violation is a bad answer like any other.

The section fields are the predecessor's (predecessor-facts §4) because the web app parses
them by name. Fact categories are the predecessor's too (§7).
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

# ---------------------------------------------------------------------------------------------
# The validator

SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "title",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
    }
)
SUPPORTED_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
# Keywords the Messages API rejects or ignores; moved into the description on the wire.
_WIRE_UNSUPPORTED = frozenset({"minLength", "maxLength", "maxItems"})
# The largest ``minItems`` the API accepts.
WIRE_MAX_MIN_ITEMS = 1
# Stop collecting problems after this many: the first few say what went wrong.
MAX_REPORTED_PROBLEMS = 20

JSONObject = dict[str, Any]


class SchemaDefinitionError(ValueError):
    """A schema uses a keyword or shape this module cannot enforce or the API would reject."""


def check_schema(schema: Mapping[str, Any], path: str = "$") -> None:
    """Raise ``SchemaDefinitionError`` unless ``schema`` is within the supported subset.

    Every node needs a supported ``type`` (or an ``enum``); objects need ``properties`` and
    ``additionalProperties: false``, and ``required`` names only declared properties; arrays
    need ``items``; bounds are non-negative integers with min <= max.
    """
    unknown = sorted(set(schema) - SUPPORTED_KEYWORDS)
    if unknown:
        raise SchemaDefinitionError(f"{path}: unsupported keywords {unknown}")
    kind = schema.get("type")
    # A node may omit ``type`` only when an ``enum`` says what it can be.
    if (kind is not None or "enum" not in schema) and kind not in SUPPORTED_TYPES:
        raise SchemaDefinitionError(f"{path}: type must be one of {sorted(SUPPORTED_TYPES)}")
    if "enum" in schema:
        enum = schema["enum"]
        if not isinstance(enum, list) or not enum:
            raise SchemaDefinitionError(f"{path}: enum must be a non-empty list")
        if not all(v is None or isinstance(v, str | int | float | bool) for v in enum):
            raise SchemaDefinitionError(f"{path}: enum values must be primitives")
    for low, high in (("minItems", "maxItems"), ("minLength", "maxLength")):
        for key in (low, high):
            value = schema.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise SchemaDefinitionError(f"{path}: {key} must be a non-negative integer")
        if low in schema and high in schema and schema[low] > schema[high]:
            raise SchemaDefinitionError(f"{path}: {low} is greater than {high}")
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            raise SchemaDefinitionError(f"{path}: an object needs properties")
        if schema.get("additionalProperties") is not False:
            raise SchemaDefinitionError(f"{path}: an object needs additionalProperties: false")
        required = schema.get("required", [])
        if not isinstance(required, list) or not set(required) <= set(properties):
            raise SchemaDefinitionError(f"{path}: required must list declared properties")
        for name, sub in properties.items():
            check_schema(sub, f"{path}.{name}")
    elif "properties" in schema or "required" in schema or "additionalProperties" in schema:
        raise SchemaDefinitionError(f"{path}: object keywords on a non-object")
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping):
            raise SchemaDefinitionError(f"{path}: an array needs items")
        check_schema(items, f"{path}[]")
    elif "items" in schema or "minItems" in schema or "maxItems" in schema:
        raise SchemaDefinitionError(f"{path}: array keywords on a non-array")
    if kind != "string" and ("minLength" in schema or "maxLength" in schema):
        raise SchemaDefinitionError(f"{path}: string keywords on a non-string")


def _type_matches(kind: str, value: object) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return value is None  # "null"


def _enum_contains(enum: list[object], value: object) -> bool:
    # ``True == 1`` in Python; JSON keeps them apart, so compare types too.
    return any(type(option) is type(value) and option == value for option in enum)


def _validate(value: object, schema: Mapping[str, Any], path: str, problems: list[str]) -> None:
    if len(problems) >= MAX_REPORTED_PROBLEMS:
        return
    kind = schema.get("type")
    if kind is not None and not _type_matches(kind, value):
        problems.append(f"{path}: expected {kind}")
        return
    if "enum" in schema and not _enum_contains(schema["enum"], value):
        problems.append(f"{path}: not one of the allowed values")
        return
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: longer than {schema['maxLength']} characters")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if items is not None:
            for index, item in enumerate(value):
                _validate(item, items, f"{path}[{index}]", problems)
    elif isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        missing = [name for name in schema.get("required", []) if name not in value]
        problems.extend(f"{path}.{name}: missing" for name in missing)
        unexpected = [key for key in value if key not in properties]
        if unexpected and schema.get("additionalProperties") is False:
            # The names come from the model and may carry personal data: count, don't echo.
            problems.append(f"{path}: {len(unexpected)} unexpected properties")
        for name, sub in properties.items():
            if name in value:
                _validate(value[name], sub, f"{path}.{name}", problems)


def validate(value: object, schema: Mapping[str, Any]) -> list[str]:
    """Problems of ``value`` against ``schema`` (empty when valid), as ``path: rule`` lines."""
    problems: list[str] = []
    _validate(value, schema, "$", problems)
    return problems[:MAX_REPORTED_PROBLEMS]


# ---------------------------------------------------------------------------------------------
# The wire form


def _bound_hint(low: int | None, high: int | None, unit: str) -> str | None:
    if low is not None and high is not None:
        return f"Between {low} and {high} {unit}."
    if high is not None:
        return f"At most {high} {unit}."
    if low is not None:
        return f"At least {low} {unit}."
    return None


def to_wire_schema(schema: Mapping[str, Any]) -> JSONObject:
    """``schema`` without the keywords the API rejects, their meaning moved into descriptions."""
    node: JSONObject = {}
    hints: list[str] = []
    for key, value in schema.items():
        if key == "properties":
            node[key] = {name: to_wire_schema(sub) for name, sub in value.items()}
        elif key == "items":
            node[key] = to_wire_schema(value)
        elif key in _WIRE_UNSUPPORTED:
            continue
        elif key == "minItems" and value > WIRE_MAX_MIN_ITEMS:
            node[key] = WIRE_MAX_MIN_ITEMS
        else:
            node[key] = copy.deepcopy(value)
    min_items = schema.get("minItems")
    item_hint = _bound_hint(
        min_items if min_items is not None and min_items > WIRE_MAX_MIN_ITEMS else None,
        schema.get("maxItems"),
        "items",
    )
    if item_hint:
        hints.append(item_hint)
    min_length = schema.get("minLength")
    max_length = schema.get("maxLength")
    if min_length == 1:
        hints.append(
            "Not empty." if max_length is None else f"Not empty; at most {max_length} characters."
        )
    else:
        length_hint = _bound_hint(min_length, max_length, "characters")
        if length_hint:
            hints.append(length_hint)
    if hints:
        description = schema.get("description")
        node["description"] = " ".join([description, *hints] if description else hints)
    return node


# ---------------------------------------------------------------------------------------------
# Output schemas

SemanticCheck = Callable[[JSONObject], list[str]]


@dataclass(frozen=True, eq=False)
class OutputSchema:
    """A named answer format: the full schema, the semantic rules beyond it, the wire form.

    ``name`` identifies it in logs. Construction checks the schema (``check_schema``) and
    requires an object at the root (structured outputs answer with an object).
    """

    name: str
    schema: Mapping[str, Any]
    semantic_check: SemanticCheck | None = None

    def __post_init__(self) -> None:
        check_schema(self.schema)
        if self.schema.get("type") != "object":
            raise SchemaDefinitionError(f"{self.name}: the root must be an object")

    @cached_property
    def wire_schema(self) -> JSONObject:
        """The schema as sent in ``output_config.format.schema``."""
        return to_wire_schema(self.schema)

    def validate(self, data: object) -> list[str]:
        """Schema problems of ``data``; when there are none, the semantic problems."""
        problems = validate(data, self.schema)
        if problems or self.semantic_check is None or not isinstance(data, dict):
            return problems
        return self.semantic_check(data)[:MAX_REPORTED_PROBLEMS]


def _text(max_length: int, description: str) -> JSONObject:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "description": description}


def _text_list(min_items: int, max_items: int, item_max: int, description: str) -> JSONObject:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": item_max},
        "minItems": min_items,
        "maxItems": max_items,
        "description": description,
    }


def _object(properties: Mapping[str, JSONObject], description: str | None = None) -> JSONObject:
    node: JSONObject = {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        node["description"] = description
    return node


# --- The five soulprint sections --------------------------------------------------------------

# The predecessor's literal for an unknown string field; the chat app drops fields that say it.
NOT_ENOUGH_DATA = "not enough data"
_UNKNOWN = f' Use "{NOT_ENOUGH_DATA}" when the conversations do not show it.'

# A few sentences: enough to describe a style, short enough for the chat's system prompt.
PROSE_MAX_CHARS = 600
# One sentence.
SENTENCE_MAX_CHARS = 300
# A name, a place, a job title.
SHORT_TEXT_MAX_CHARS = 120
# One list entry (a trait, a rule, an interest).
LIST_ITEM_MAX_CHARS = 200
# Lists the predecessor sized at 3-7 (traits, behavioural rules).
CORE_LIST_MIN_ITEMS = 3
CORE_LIST_MAX_ITEMS = 7
# Other lists: long enough for a rich profile, short enough to stay specific.
FREE_LIST_MAX_ITEMS = 12
# A name the chat shows in its header.
AI_NAME_MAX_CHARS = 40
# "2-4 words".
ARCHETYPE_MAX_CHARS = 60

FORMALITY_LEVELS = ("casual", "semi-formal", "formal", "adaptive")
EMOJI_STYLES = ("none", "minimal", "moderate", "heavy")

SOUL_SCHEMA = _object(
    {
        "communication_style": _text(PROSE_MAX_CHARS, "How the user communicates." + _UNKNOWN),
        "personality_traits": _text_list(
            CORE_LIST_MIN_ITEMS,
            CORE_LIST_MAX_ITEMS,
            LIST_ITEM_MAX_CHARS,
            "The user's most evident personality traits.",
        ),
        "tone_preferences": _text(PROSE_MAX_CHARS, "The tone the user prefers." + _UNKNOWN),
        "boundaries": _text(PROSE_MAX_CHARS, "Topics or behaviours to avoid." + _UNKNOWN),
        "humor_style": _text(PROSE_MAX_CHARS, "The user's sense of humour." + _UNKNOWN),
        "formality_level": {"type": "string", "enum": list(FORMALITY_LEVELS)},
        "emotional_patterns": _text(PROSE_MAX_CHARS, "Recurring emotional patterns." + _UNKNOWN),
    },
    "Who the user is and how they communicate.",
)

IDENTITY_SCHEMA = _object(
    {
        "ai_name": _text(
            AI_NAME_MAX_CHARS,
            "A creative, personal name for the user's AI companion, derived from their "
            "personality. Never generic: not Assistant, Helper, AI, Bot, Buddy, Soul, ChatGPT "
            "or Claude.",
        ),
        "archetype": _text(ARCHETYPE_MAX_CHARS, "The companion's archetype in 2 to 4 words."),
        "vibe": _text(SENTENCE_MAX_CHARS, "The companion's vibe in one sentence."),
        "emoji_style": {"type": "string", "enum": list(EMOJI_STYLES)},
        "signature_greeting": _text(SENTENCE_MAX_CHARS, "How the companion greets the user."),
    },
    "The AI companion's identity, shaped to fit the user.",
)

USER_SCHEMA = _object(
    {
        "name": _text(SHORT_TEXT_MAX_CHARS, "The user's name." + _UNKNOWN),
        "location": _text(SHORT_TEXT_MAX_CHARS, "Where the user lives." + _UNKNOWN),
        "occupation": _text(SHORT_TEXT_MAX_CHARS, "The user's work." + _UNKNOWN),
        "relationships": _text_list(
            0, FREE_LIST_MAX_ITEMS, LIST_ITEM_MAX_CHARS, "People important to the user."
        ),
        "interests": _text_list(
            0, FREE_LIST_MAX_ITEMS, LIST_ITEM_MAX_CHARS, "The user's interests."
        ),
        "life_context": _text(PROSE_MAX_CHARS, "The user's current life situation." + _UNKNOWN),
        "preferred_address": _text(
            SHORT_TEXT_MAX_CHARS, "How the user likes to be addressed." + _UNKNOWN
        ),
    },
    "Facts about the user.",
)

AGENTS_SCHEMA = _object(
    {
        "response_style": _text(PROSE_MAX_CHARS, "How the companion should respond."),
        "behavioral_rules": _text_list(
            CORE_LIST_MIN_ITEMS,
            CORE_LIST_MAX_ITEMS,
            LIST_ITEM_MAX_CHARS,
            "Rules the companion follows with this user.",
        ),
        "context_adaptation": _text(PROSE_MAX_CHARS, "How to adapt to context." + _UNKNOWN),
        "memory_directives": _text(PROSE_MAX_CHARS, "What to remember about the user." + _UNKNOWN),
        "do_not": _text_list(
            0, FREE_LIST_MAX_ITEMS, LIST_ITEM_MAX_CHARS, "Things the companion must not do."
        ),
    },
    "How the companion behaves.",
)

TOOLS_SCHEMA = _object(
    {
        "likely_usage": _text_list(
            0, FREE_LIST_MAX_ITEMS, LIST_ITEM_MAX_CHARS, "What the user will likely ask for."
        ),
        "capabilities_emphasis": _text_list(
            0, FREE_LIST_MAX_ITEMS, LIST_ITEM_MAX_CHARS, "Capabilities to emphasise."
        ),
        "output_preferences": _text(PROSE_MAX_CHARS, "Preferred output formats." + _UNKNOWN),
        "depth_preference": _text(PROSE_MAX_CHARS, "Preferred depth of answers." + _UNKNOWN),
    },
    "How the user uses an assistant.",
)

SECTION_NAMES = ("soul", "identity", "user", "agents", "tools")
SECTION_SCHEMAS: Mapping[str, JSONObject] = {
    "soul": SOUL_SCHEMA,
    "identity": IDENTITY_SCHEMA,
    "user": USER_SCHEMA,
    "agents": AGENTS_SCHEMA,
    "tools": TOOLS_SCHEMA,
}

# Names that are no name: the predecessor's banned list, the products' own names, and what a
# model writes when it has nothing. Compared word by word after normalising.
GENERIC_NAME_WORDS = frozenset(
    {
        "assistant",
        "helper",
        "ai",
        "bot",
        "buddy",
        "soul",
        "chatgpt",
        "claude",
        "gpt",
        "chatbot",
        "companion",
        "friend",
        "agent",
        "model",
        "llm",
        "copilot",
        "gemini",
        "bard",
        "siri",
        "alexa",
        "openai",
        "anthropic",
        "unknown",
        "none",
        "null",
        "nil",
        "tbd",
        "name",
        "placeholder",
        "undefined",
        "user",
    }
)
# Words that do not make a generic name personal ("My AI", "The Assistant", "AI 2").
NAME_FILLER_WORDS = frozenset(
    {"my", "your", "the", "a", "an", "personal", "virtual", "digital", "chat"}
)
# Whole names that mean "no data".
PLACEHOLDER_NAMES = frozenset({NOT_ENOUGH_DATA, "n a", "na", "not available", "no name"})


def ai_name_problem(name: str) -> str | None:
    """Why ``name`` is not acceptable as ``identity.ai_name``, or ``None`` when it is.

    Refused: empty or blank, no letter at all, a placeholder ("not enough data", "N/A"), a
    name made only of generic words and fillers ("Assistant", "My AI", "AI Buddy", "ChatGPT",
    "Claude 2"), or one that spells a generic word when its parts are joined ("A.I.").
    Case, accents, punctuation and digits do not matter.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    if not any(ch.isalpha() for ch in folded):
        return "empty"
    words = re.findall(r"[^\W\d_]+", folded)
    if " ".join(words) in PLACEHOLDER_NAMES:
        return "placeholder"
    if all(word in GENERIC_NAME_WORDS or word in NAME_FILLER_WORDS for word in words):
        return "generic"
    if "".join(words) in GENERIC_NAME_WORDS:  # "A.I.", "Chat-G.P.T."
        return "generic"
    return None


def _soulprint_check(data: JSONObject) -> list[str]:
    identity = data.get("identity")
    if not isinstance(identity, dict) or not isinstance(identity.get("ai_name"), str):
        return []  # the schema already reported it
    problem = ai_name_problem(identity["ai_name"])
    return [f"$.identity.ai_name: {problem} name"] if problem else []


SOULPRINT = OutputSchema(
    name="soulprint",
    schema=_object(SECTION_SCHEMAS, "A persona profile in five sections."),
    semantic_check=_soulprint_check,
)

# --- Facts -------------------------------------------------------------------------------------

FACT_CATEGORIES = ("preferences", "projects", "dates", "beliefs", "decisions")
# One fact is one sentence.
FACT_MAX_CHARS = 300
PROJECT_NAME_MAX_CHARS = 120
PROJECT_DESCRIPTION_MAX_CHARS = 400
PROJECT_DETAILS_MAX_CHARS = 600
# "2024-05-03", "spring 2023", "every Monday".
DATE_MAX_CHARS = 60
# A chunk is at most ~2000 tokens: more than this many facts per category is padding.
EXTRACTION_MAX_ITEMS_PER_CATEGORY = 25
# A reduction batch is ~20K tokens of facts cut to half; ~300 one-sentence facts is its ceiling.
REDUCTION_MAX_ITEMS_PER_CATEGORY = 300

_FACT_ITEM_SCHEMAS: Mapping[str, JSONObject] = {
    "preferences": _text(FACT_MAX_CHARS, "A preference, in one sentence."),
    "projects": _object(
        {
            "name": _text(PROJECT_NAME_MAX_CHARS, "The project's name."),
            "description": _text(PROJECT_DESCRIPTION_MAX_CHARS, "What the project is."),
            "details": _text(PROJECT_DETAILS_MAX_CHARS, "Specifics: status, stack, people, dates."),
        }
    ),
    "dates": _object(
        {
            "event": _text(FACT_MAX_CHARS, "What happens or happened."),
            "date": _text(DATE_MAX_CHARS, "When, as precisely as the text says."),
        }
    ),
    "beliefs": _text(FACT_MAX_CHARS, "A belief or value, in one sentence."),
    "decisions": _object(
        {
            "decision": _text(FACT_MAX_CHARS, "What was decided."),
            "context": _text(PROJECT_DESCRIPTION_MAX_CHARS, "Why, and what it relates to."),
        }
    ),
}


def _fact_list(category: str, max_items: int) -> JSONObject:
    return {"type": "array", "items": _FACT_ITEM_SCHEMAS[category], "maxItems": max_items}


def _facts_schema(categories: tuple[str, ...], max_items: int, description: str) -> JSONObject:
    return _object({c: _fact_list(c, max_items) for c in categories}, description)


FACT_EXTRACTION = OutputSchema(
    name="fact_extraction",
    schema=_facts_schema(
        FACT_CATEGORIES,
        EXTRACTION_MAX_ITEMS_PER_CATEGORY,
        "Facts about the user stated or strongly implied in the text; empty lists when none.",
    ),
)

FACT_REDUCTION = OutputSchema(
    name="fact_reduction",
    schema=_facts_schema(
        FACT_CATEGORIES,
        REDUCTION_MAX_ITEMS_PER_CATEGORY,
        "The given facts merged and deduplicated, most specific and important kept.",
    ),
)

# One schema per category, for reducing a single oversized category on its own.
FACT_CATEGORY_REDUCTION: Mapping[str, OutputSchema] = {
    category: OutputSchema(
        name=f"fact_reduction_{category}",
        schema=_facts_schema(
            (category,),
            REDUCTION_MAX_ITEMS_PER_CATEGORY,
            "The given facts merged and deduplicated, most specific and important kept.",
        ),
    )
    for category in FACT_CATEGORIES
}
