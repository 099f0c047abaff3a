"""One query/text normalization shared by training (dbt macro `normalize_query`) and serving."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")

# Simple spelling variants, applied per token AFTER plural stripping ("colours" -> "colour" -> "color").
# Kept tiny on purpose and identical in the dbt macro (dbt_project/macros/normalize_query.sql); every value is
# a fixed point of the whole normalization, so normalize_query is idempotent. The canonical spelling is the one
# the catalog uses ("grey" is a simulator color, so "gray" maps to it, not the other way round).
SPELLING_VARIANTS: dict[str, str] = {
    "colour": "color",
    "gray": "grey",
    "tshirt": "t shirt",       # "t-shirt" already becomes "t shirt" through punctuation stripping
    "tee": "t shirt",
    "hoody": "hoodie",
    "jewellery": "jewelry",
}


def _singular(token: str) -> str:
    # Naive plural stripping; kept identical to the dbt macro (see dbt_project/macros/normalize_query.sql).
    if len(token) > 3 and token.endswith("es") and token[-3] in "sxz":
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def normalize_query(text: str) -> str:
    """Lowercase, strip punctuation, collapse whitespace, strip naive plurals, map spelling variants."""
    t = _NON_WORD.sub(" ", text.lower())
    tokens = [_singular(tok) for tok in _SPACES.split(t.strip()) if tok]
    return " ".join(SPELLING_VARIANTS.get(tok, tok) for tok in tokens)


def tokenize(text: str) -> list[str]:
    """Tokens of the normalized text (used by lexical retrieval and query understanding)."""
    norm = normalize_query(text)
    return norm.split(" ") if norm else []
