"""Every structured answer soulworker asks a model for: its schema, which of its rules are hard
and which soft, and the rules beyond the schema.

A schema here is the *full* schema (``soulworker.llm.json_schema`` judges answers against it and
makes the wire form that is sent). Hard rules are the shape the web app and our own code parse:
types, enums, the properties listed as ``required``. Everything else is soft: counts, lengths,
and properties that have a ``default`` (filled in when a model leaves one out). See
docs/model-answers.md for the policy and why.

``OutputSchema.rule`` adds what a schema cannot say: ``identity.ai_name`` must be a real name.
Its ``check`` makes an answer unusable (the model is asked once more, told why); when the second
answer breaks it too, its ``mend`` repairs the answer instead of failing the import.

The section fields are the predecessor's because the web app parses them by name; the fact
categories are the predecessor's too (docs/model-answers.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from soulworker.llm.ai_name import NOT_ENOUGH_DATA, ai_name_problem, fallback_name
from soulworker.llm.json_schema import (
    MAX_REPORTED_PROBLEMS,
    JSONObject,
    Judgement,
    Repair,
    SchemaDefinitionError,
    check_schema,
    judge,
    to_wire_schema,
    validate,
)

# Rule name of the repair that gives a companion a name when the model gave none twice.
FALLBACK_NAME = "fallback_name"


@dataclass(frozen=True)
class AnswerRule:
    """A rule beyond the schema: ``check`` lists its hard problems in a schema-valid answer;
    ``mend`` returns the answer repaired and the repairs made. ``ask_again`` false means the
    answer is mended at once instead of asking the model again (the value does not matter)."""

    check: Callable[[JSONObject], list[str]]
    mend: Callable[[JSONObject], tuple[JSONObject, list[Repair]]]
    ask_again: bool = True


@dataclass(frozen=True, eq=False)
class OutputSchema:
    """A named answer format: the full schema, the rule beyond it, the wire form.

    ``name`` identifies it in logs. Construction checks the schema (``check_schema``) and
    requires an object at the root (structured outputs answer with an object).
    """

    name: str
    schema: Mapping[str, Any]
    rule: AnswerRule | None = None

    def __post_init__(self) -> None:
        check_schema(self.schema)
        if self.schema.get("type") != "object":
            raise SchemaDefinitionError(f"{self.name}: the root must be an object")

    @cached_property
    def wire_schema(self) -> JSONObject:
        """The schema as sent in ``output_config.format.schema``."""
        return to_wire_schema(self.schema)

    def judge(self, data: object, *, last_chance: bool = False) -> Judgement:
        """``data`` judged: hard problems, or the answer with its soft violations repaired.

        With ``last_chance`` (the model was already asked again), a broken ``rule`` is mended
        rather than reported.
        """
        judged = judge(data, self.schema)
        if judged.problems or self.rule is None:
            return judged
        problems = self.rule.check(judged.data)
        if not problems:
            return judged
        if last_chance or not self.rule.ask_again:
            mended, repairs = self.rule.mend(judged.data)
            return Judgement(data=mended, problems=(), repairs=(*judged.repairs, *repairs))
        return Judgement(
            data=judged.data,
            problems=tuple(problems[:MAX_REPORTED_PROBLEMS]),
            repairs=judged.repairs,
        )

    def validate(self, data: object) -> list[str]:
        """Every rule ``data`` breaks, hard or soft, the rule beyond the schema included."""
        problems = validate(data, self.schema)
        if problems or self.rule is None or not isinstance(data, dict):
            return problems
        return self.rule.check(data)[:MAX_REPORTED_PROBLEMS]


def _text(max_length: int, description: str, *, default: str | None = None) -> JSONObject:
    node: JSONObject = {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "description": description,
    }
    if default is not None:
        node["default"] = default
    return node


def _text_list(min_items: int, max_items: int, item_max: int, description: str) -> JSONObject:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1, "maxLength": item_max},
        "minItems": min_items,
        "maxItems": max_items,
        "description": description,
        "default": [],
    }


def _object(
    properties: Mapping[str, JSONObject],
    description: str | None = None,
    *,
    default: JSONObject | None = None,
) -> JSONObject:
    """An object whose properties without a ``default`` are required (hard)."""
    node: JSONObject = {
        "type": "object",
        "properties": dict(properties),
        "required": [name for name, sub in properties.items() if "default" not in sub],
        "additionalProperties": False,
    }
    if description:
        node["description"] = description
    if default is not None:
        node["default"] = default
    return node


def _unknown_text(max_length: int, description: str) -> JSONObject:
    """A text field the data may not show: "not enough data" then, and by default."""
    return _text(
        max_length,
        f'{description} Write "{NOT_ENOUGH_DATA}" when the conversations do not show it.',
        default=NOT_ENOUGH_DATA,
    )


# --- The five soulprint sections --------------------------------------------------------------

# A few sentences: enough to describe a style, short enough for the chat's system prompt.
PROSE_MAX_CHARS = 600
# One sentence.
SENTENCE_MAX_CHARS = 300
# A name, a place, a job title.
SHORT_TEXT_MAX_CHARS = 120
# One list entry (a trait, a rule, an interest).
LIST_ITEM_MAX_CHARS = 200
# Lists the predecessor sized at 3-7 (traits, behavioural rules): any history shows a few.
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
# What an answer that leaves an enum out gets: the choices that assume least.
DEFAULT_FORMALITY = "adaptive"
DEFAULT_EMOJI_STYLE = "minimal"
# Said of every list that may be empty, so no prompt needs to say it.
_MAY_BE_EMPTY = " Empty when the conversations show none."


def _free_list(description: str) -> JSONObject:
    return _text_list(0, FREE_LIST_MAX_ITEMS, LIST_ITEM_MAX_CHARS, description + _MAY_BE_EMPTY)


SOUL_SCHEMA = _object(
    {
        "communication_style": _unknown_text(PROSE_MAX_CHARS, "How the user communicates."),
        "personality_traits": _text_list(
            CORE_LIST_MIN_ITEMS,
            CORE_LIST_MAX_ITEMS,
            LIST_ITEM_MAX_CHARS,
            "The user's most evident personality traits.",
        ),
        "tone_preferences": _unknown_text(PROSE_MAX_CHARS, "The tone the user prefers."),
        "boundaries": _unknown_text(PROSE_MAX_CHARS, "Topics or behaviours to avoid."),
        "humor_style": _unknown_text(PROSE_MAX_CHARS, "The user's sense of humour."),
        "formality_level": {
            "type": "string",
            "enum": list(FORMALITY_LEVELS),
            "default": DEFAULT_FORMALITY,
        },
        "emotional_patterns": _unknown_text(PROSE_MAX_CHARS, "Recurring emotional patterns."),
    },
    "Who the user is and how they communicate.",
)

IDENTITY_SCHEMA = _object(
    {
        "ai_name": _text(
            AI_NAME_MAX_CHARS,
            "A creative, personal name for the user's AI companion, derived from their "
            "personality; one or two words. Never generic: not Assistant, Helper, AI, Bot, "
            f'Buddy, Soul, ChatGPT or Claude, and never "{NOT_ENOUGH_DATA}".',
        ),
        "archetype": _unknown_text(
            ARCHETYPE_MAX_CHARS, "The companion's archetype in 2 to 4 words."
        ),
        "vibe": _unknown_text(SENTENCE_MAX_CHARS, "The companion's vibe in one sentence."),
        "emoji_style": {
            "type": "string",
            "enum": list(EMOJI_STYLES),
            "default": DEFAULT_EMOJI_STYLE,
        },
        "signature_greeting": _unknown_text(
            SENTENCE_MAX_CHARS, "How the companion greets the user."
        ),
    },
    "The AI companion's identity, shaped to fit the user.",
)

USER_SCHEMA = _object(
    {
        "name": _unknown_text(SHORT_TEXT_MAX_CHARS, "The user's name."),
        "location": _unknown_text(SHORT_TEXT_MAX_CHARS, "Where the user lives."),
        "occupation": _unknown_text(SHORT_TEXT_MAX_CHARS, "The user's work."),
        "relationships": _free_list("People important to the user."),
        "interests": _free_list("The user's interests."),
        "life_context": _unknown_text(PROSE_MAX_CHARS, "The user's current life situation."),
        "preferred_address": _unknown_text(
            SHORT_TEXT_MAX_CHARS, "How the user likes to be addressed."
        ),
    },
    "Facts about the user.",
)

AGENTS_SCHEMA = _object(
    {
        "response_style": _unknown_text(PROSE_MAX_CHARS, "How the companion should respond."),
        "behavioral_rules": _text_list(
            CORE_LIST_MIN_ITEMS,
            CORE_LIST_MAX_ITEMS,
            LIST_ITEM_MAX_CHARS,
            "Rules the companion follows with this user.",
        ),
        "context_adaptation": _unknown_text(PROSE_MAX_CHARS, "How to adapt to context."),
        "memory_directives": _unknown_text(PROSE_MAX_CHARS, "What to remember about the user."),
        "do_not": _free_list("Things the companion must not do."),
    },
    "How the companion behaves.",
)

TOOLS_SCHEMA = _object(
    {
        "likely_usage": _free_list("What the user will likely ask for."),
        "capabilities_emphasis": _free_list("Capabilities to emphasise."),
        "output_preferences": _unknown_text(PROSE_MAX_CHARS, "Preferred output formats."),
        "depth_preference": _unknown_text(PROSE_MAX_CHARS, "Preferred depth of answers."),
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
AI_NAME_PATH = "$.identity.ai_name"


def _ai_name_check(data: JSONObject) -> list[str]:
    problem = ai_name_problem(data["identity"]["ai_name"])
    return [f"{AI_NAME_PATH}: {problem} name"] if problem else []


def _give_a_name(data: JSONObject) -> tuple[JSONObject, list[Repair]]:
    """The answer with a fallback ``ai_name``, chosen from everything else it says."""
    rest = {**data, "identity": {k: v for k, v in data["identity"].items() if k != "ai_name"}}
    name = fallback_name(json.dumps(rest, sort_keys=True, ensure_ascii=False))
    mended = {**data, "identity": {**data["identity"], "ai_name": name}}
    return mended, [Repair(AI_NAME_PATH, FALLBACK_NAME)]


_SOULPRINT_SCHEMA = _object(SECTION_SCHEMAS, "A persona profile in five sections.")

SOULPRINT = OutputSchema(
    name="soulprint",
    schema=_SOULPRINT_SCHEMA,
    rule=AnswerRule(check=_ai_name_check, mend=_give_a_name),
)

# The sections regenerated with MEMORY keep the quick pass's name (the one the user met), so a
# generic name there is not worth asking again for: it is mended at once.
SOULPRINT_V2 = OutputSchema(
    name="soulprint_v2",
    schema=_SOULPRINT_SCHEMA,
    rule=AnswerRule(check=_ai_name_check, mend=_give_a_name, ask_again=False),
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
            "description": _text(PROJECT_DESCRIPTION_MAX_CHARS, "What the project is.", default=""),
            "details": _text(
                PROJECT_DETAILS_MAX_CHARS, "Specifics: status, stack, people, dates.", default=""
            ),
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
            "context": _text(
                PROJECT_DESCRIPTION_MAX_CHARS, "Why, and what it relates to.", default=""
            ),
        }
    ),
}


def _fact_list(category: str, max_items: int) -> JSONObject:
    return {
        "type": "array",
        "items": _FACT_ITEM_SCHEMAS[category],
        "maxItems": max_items,
        "default": [],
    }


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
