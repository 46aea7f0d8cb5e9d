"""The companion's name: when a name is no name, and the name given when the model has none.

``identity.ai_name`` is what the chat shows in its header. A model with little to go on writes
"Assistant", "My AI" or "not enough data"; those are refused (a hard rule, so the model is asked
once more). If the second answer is still no name, the import does not fail over it: the
companion gets a deterministic name from ``FALLBACK_NAMES`` (docs/model-answers.md).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

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
# The literal the prompts ask for when the data does not show a field.
NOT_ENOUGH_DATA = "not enough data"
# Whole names that mean "no data".
PLACEHOLDER_NAMES = frozenset({NOT_ENOUGH_DATA, "n a", "na", "not available", "no name"})

# Short, warm, uncommon as words, easy to say in many languages. Chosen by a hash, so the same
# answer always gets the same name and different people mostly get different ones.
FALLBACK_NAMES = (
    "Juniper",
    "Kestrel",
    "Marlow",
    "Wren",
    "Sable",
    "Rowan",
    "Linden",
    "Calder",
    "Isla",
    "Orrin",
    "Tamsin",
    "Ember",
    "Soren",
    "Maren",
    "Lark",
    "Quill",
    "Fennel",
    "Astra",
    "Bryn",
    "Cove",
    "Delphi",
    "Elowen",
    "Fable",
    "Hazel",
    "Indigo",
    "Jory",
    "Kit",
    "Lumen",
    "Mica",
    "Nell",
    "Ondine",
    "Pip",
)


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


def fallback_name(seed: str) -> str:
    """A real name for a companion whose model gave none, the same for the same ``seed``."""
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    return FALLBACK_NAMES[int.from_bytes(digest[:4], "big") % len(FALLBACK_NAMES)]
