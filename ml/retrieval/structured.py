"""Structured retrieval: query understanding maps query tokens to attribute constraints, then filters.

The vocabularies are the catalog's own attribute values (category, brand, color, material), normalized
like queries so "shoes" matches category "Shoe". Several values of one attribute are alternatives
("red blue shirt" = red or blue); constraints on different attributes must all hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.retrieval.base import ATTRIBUTES, Candidate, CatalogIndex, top_k
from ml.text import tokenize

POPULARITY_PRIOR = 0.1  # a popularity tie-breaker, always below one matched constraint


@dataclass(frozen=True)
class ParsedQuery:
    constraints: dict[str, frozenset[str]]   # attribute -> accepted normalized values
    mask: np.ndarray | None                  # items satisfying every constraint; None when none recognized

    @property
    def n_constraints(self) -> int:
        return len(self.constraints)


class QueryParser:
    """Longest-match of query n-grams against the catalog's attribute vocabularies (built once)."""

    def __init__(self, index: CatalogIndex, max_ngram: int = 4) -> None:
        self._n = index.n
        self._values: dict[tuple[str, ...], list[str]] = {}   # value tokens -> attributes having it
        self._masks: dict[tuple[str, str], np.ndarray] = {}   # (attribute, value) -> items having it
        for a in ATTRIBUTES:
            col = index.attrs[a]
            for v in sorted(set(col.tolist()) - {""}):
                toks = tuple(v.split(" "))
                if len(toks) > max_ngram:
                    continue
                self._values.setdefault(toks, []).append(a)
                self._masks[(a, v)] = col == v
        self._max_n = max((len(t) for t in self._values), default=0)

    def parse(self, query: str) -> ParsedQuery:
        tokens = tokenize(query)
        found: dict[str, set[str]] = {}
        masks: dict[str, np.ndarray] = {}
        i = 0
        while i < len(tokens):
            for n in range(min(self._max_n, len(tokens) - i), 0, -1):
                span = tuple(tokens[i:i + n])
                attrs = self._values.get(span)
                if attrs:
                    value = " ".join(span)
                    # A value several attributes share ("gold": colour or material) is one constraint,
                    # keyed by its first attribute, satisfied by any of them.
                    key = attrs[0]
                    m = np.logical_or.reduce([self._masks[(a, value)] for a in attrs])
                    found.setdefault(key, set()).add(value)
                    masks[key] = masks[key] | m if key in masks else m
                    i += n
                    break
            else:
                i += 1
        if not found:
            return ParsedQuery({}, None)
        mask = np.logical_and.reduce(list(masks.values())) if masks else np.ones(self._n, bool)
        return ParsedQuery({a: frozenset(v) for a, v in found.items()}, mask)


class StructuredStrategy:
    name = "structured"

    def __init__(self, index: CatalogIndex, parser: QueryParser) -> None:
        self._index = index
        self._parser = parser
        p = index.popularity
        self._prior = POPULARITY_PRIOR * (p / p.max() if len(p) and p.max() > 0 else np.zeros(len(p)))

    def retrieve(self, query: str, context: dict, k: int) -> list[Candidate]:
        parsed = self._parser.parse(query)
        if parsed.mask is None:
            return []  # nothing recognized: not this strategy's query
        score = parsed.n_constraints + self._prior
        ids = self._index.item_ids
        return [Candidate(ids[i], float(score[i]), self.name) for i in top_k(score, k, parsed.mask)]
