"""The subset of JSON Schema our answer formats use: checking a schema, judging an answer against
it, and the "wire" form the Messages API accepts.

A model's answer is input from outside, like an upload (docs/model-answers.md). Judging it sorts
every rule into one of two kinds:

* **hard** rules are the shape the program and the web app parse: the value's ``type``, an
  ``enum``, a ``required`` property. A hard violation is a *problem*; an answer with problems is
  not used (the caller asks once more, telling the model the problems).
* **soft** rules are counts and lengths (``minItems``, ``maxItems``, ``minLength``,
  ``maxLength``), a missing property that has a ``default``, a property the schema does not
  declare. A soft violation is *repaired* (over a maximum is cut, under a minimum is kept, a
  missing property gets its default, an undeclared one is dropped) and the repair is reported;
  it never makes an answer unusable.

Problems and repairs name a JSON path and a rule, never a value: answers are personal data.

The wire form exists because the API's structured outputs accept only part of JSON Schema (no
``minLength``/``maxLength``/``maxItems``, ``minItems`` only 0 or 1, no ``default``,
``additionalProperties: false`` on every object). ``to_wire_schema`` removes what it cannot
carry and restates the bounds once, in the node's ``description`` ("Between 3 and 7 items."),
where the model reads them; every declared property is required on the wire, so constrained
decoding always produces complete objects.

The keywords understood are exactly: ``type`` (object, array, string, integer, number, boolean,
null), ``properties``, ``required``, ``additionalProperties`` (false only), ``items``, ``enum``,
``minItems``, ``maxItems``, ``minLength``, ``maxLength``, ``default``, ``description``,
``title``. A schema using anything else is refused when it is defined (``SchemaDefinitionError``),
so a constraint can never be silently ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
        "default",
    }
)
SUPPORTED_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
# Keywords the Messages API rejects or ignores; bounds among them move into the description.
_WIRE_UNSUPPORTED = frozenset({"minLength", "maxLength", "maxItems", "default"})
# The largest ``minItems`` the API accepts.
WIRE_MAX_MIN_ITEMS = 1
# Stop collecting problems after this many: the first few say what went wrong, and a re-ask
# carrying hundreds of lines would cost more than it helps.
MAX_REPORTED_PROBLEMS = 20
# Where a cut text ends when it is cut inside a word: the last space is used only if it keeps at
# least this share of the allowed length.
CUT_AT_SPACE_MIN_SHARE = 0.6
CUT_MARK = "…"

JSONObject = dict[str, Any]

# Rule names of repairs (soft) and problems (hard). Stable: they go into job results.
MAX_ITEMS = "max_items"
MIN_ITEMS = "min_items"
MAX_LENGTH = "max_length"
MIN_LENGTH = "min_length"
MISSING = "missing"
UNEXPECTED_PROPERTY = "unexpected_property"


class SchemaDefinitionError(ValueError):
    """A schema uses a keyword or shape this module cannot enforce or the API would reject."""


@dataclass(frozen=True)
class Repair:
    """One soft rule an answer broke and how it was mended: a JSON path and a rule name."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


@dataclass(frozen=True)
class Judgement:
    """What judging one answer found.

    ``problems`` are hard violations as ``path: rule`` lines (empty when the answer is usable);
    ``data`` is the answer with every soft violation repaired (meaningful only without
    problems); ``repairs`` lists what was mended.
    """

    data: Any
    problems: tuple[str, ...]
    repairs: tuple[Repair, ...]

    @property
    def usable(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------
# Checking a schema


def check_schema(schema: Mapping[str, Any], path: str = "$") -> None:
    """Raise ``SchemaDefinitionError`` unless ``schema`` is within the supported subset.

    Every node needs a supported ``type`` (or an ``enum``); objects need ``properties`` and
    ``additionalProperties: false``, and ``required`` names only declared properties; arrays
    need ``items``; bounds are non-negative integers with min <= max; a ``default`` must itself
    be valid for its node.
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
            if name in required and "default" in sub:
                raise SchemaDefinitionError(f"{path}.{name}: a required property has a default")
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
    # A default may be under a minimum (an empty list where three items are wanted): that is a
    # soft rule. It must not break a hard one.
    if "default" in schema and judge(schema["default"], schema).problems:
        raise SchemaDefinitionError(f"{path}: the default breaks its own schema")


# ---------------------------------------------------------------------------------------------
# Judging an answer


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


def cut_text(text: str, max_chars: int) -> str:
    """``text`` shortened to at most ``max_chars`` characters, ending in "…".

    Cut at the last space when that keeps most of the text, so a word is not left in halves.
    """
    if len(text) <= max_chars:
        return text
    if max_chars <= len(CUT_MARK):
        return text[:max_chars]
    room = max_chars - len(CUT_MARK)
    head = text[:room]
    space = head.rfind(" ")
    ends_a_word = text[room].isspace()
    if not ends_a_word and space >= room * CUT_AT_SPACE_MIN_SHARE:
        head = head[:space]
    return head.rstrip(" ,;:-") + CUT_MARK


class _Judge:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.repairs: list[Repair] = []

    def problem(self, path: str, rule: str) -> None:
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(f"{path}: {rule}")

    def value(self, value: object, schema: Mapping[str, Any], path: str) -> Any:
        kind = schema.get("type")
        if kind is not None and not _type_matches(kind, value):
            self.problem(path, f"expected {kind}")
            return value
        if "enum" in schema and not _enum_contains(schema["enum"], value):
            self.problem(path, "not one of the allowed values")
            return value
        if isinstance(value, str):
            return self.string(value, schema, path)
        if isinstance(value, list):
            return self.array(value, schema, path)
        if isinstance(value, dict):
            return self.object(value, schema, path)
        return value

    def string(self, value: str, schema: Mapping[str, Any], path: str) -> str:
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.repairs.append(Repair(path, MAX_LENGTH))
            return cut_text(value, schema["maxLength"])
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.repairs.append(Repair(path, MIN_LENGTH))
        return value

    def array(self, value: list[Any], schema: Mapping[str, Any], path: str) -> list[Any]:
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.repairs.append(Repair(path, MAX_ITEMS))
            value = value[: schema["maxItems"]]
        elif "minItems" in schema and len(value) < schema["minItems"]:
            self.repairs.append(Repair(path, MIN_ITEMS))
        items = schema.get("items")
        if items is None:
            return list(value)
        return [self.value(item, items, f"{path}[{index}]") for index, item in enumerate(value)]

    def object(self, value: dict[str, Any], schema: Mapping[str, Any], path: str) -> JSONObject:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        out: JSONObject = {}
        for name, sub in properties.items():
            if name in value:
                out[name] = self.value(value[name], sub, f"{path}.{name}")
            elif name in required:
                self.problem(f"{path}.{name}", MISSING)
            elif "default" in sub:
                self.repairs.append(Repair(f"{path}.{name}", MISSING))
                out[name] = copy.deepcopy(sub["default"])
        # Undeclared names come from the model and may carry personal data: never echoed.
        if any(key not in properties for key in value):
            self.repairs.append(Repair(path, UNEXPECTED_PROPERTY))
        return out


def judge(value: object, schema: Mapping[str, Any]) -> Judgement:
    """Judge ``value`` against ``schema``: its hard problems, and its soft violations repaired."""
    judging = _Judge()
    data = judging.value(value, schema, "$")
    return Judgement(data=data, problems=tuple(judging.problems), repairs=tuple(judging.repairs))


def validate(value: object, schema: Mapping[str, Any]) -> list[str]:
    """Every rule ``value`` breaks, hard and soft, as ``path: rule`` lines (empty when none)."""
    judged = judge(value, schema)
    return [*judged.problems, *(str(repair) for repair in judged.repairs)][:MAX_REPORTED_PROBLEMS]


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
    """``schema`` without the keywords the API rejects, their meaning moved into descriptions,
    and every declared property required."""
    node: JSONObject = {}
    hints: list[str] = []
    for key, value in schema.items():
        if key == "properties":
            node[key] = {name: to_wire_schema(sub) for name, sub in value.items()}
            node["required"] = list(value)
        elif key == "required":
            continue  # replaced above: constrained decoding then always fills every property
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
