"""Structured retrieval: query understanding maps query tokens to attribute constraints, then filters.

The vocabularies are the catalog's own attribute values (category, brand, color, material), normalized
like queries so "shoes" matches category "Shoe". Several values of one attribute are alternatives
("red blue shirt" = red or blue); constraints on different attributes must all hold.

Two additions use the attributes family: an optional query ``tagger`` (the extractor's ``tag_query``) adds
constraints the vocabulary match missed (a misspelled brand), and ``attr_match`` counts, per (query, item), the
recognized constraints the item satisfies (catalog + filled values): the ranker's ``attr_match`` feature,
computed by this one function for training (``ml.families.ranker.training_set``) and serving (the scorer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.retrieval.base import ATTRIBUTES, Candidate, CatalogIndex, QueryMemo, candidates, top_k
from ml.text import normalize_query, tokenize

POPULARITY_PRIOR = 0.1  # a popularity tie-breaker, always below one matched constraint
TAG_MEMO_SIZE = 4096    # queries whose tags are remembered (a few small dicts each; head queries repeat)


@dataclass(frozen=True)
class ParsedQuery:
    constraints: dict[str, frozenset[str]]   # attribute -> accepted normalized values
    mask: np.ndarray | None                  # items satisfying every constraint; None when none recognized
    masks: dict[str, np.ndarray] = field(default_factory=dict)   # attribute -> items satisfying that one

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
        self._memo = QueryMemo()

    def parse(self, query: str) -> ParsedQuery:
        """The query's constraints (memoized: structured, popularity and ``attr_match`` parse the same query)."""
        return self._memo.get(query, self._parse)

    def _parse(self, query: str) -> ParsedQuery:
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
        return self._parsed(found, masks)

    def _parsed(self, found: dict[str, set[str]], masks: dict[str, np.ndarray]) -> ParsedQuery:
        if not found:
            return ParsedQuery({}, None)
        mask = np.logical_and.reduce(list(masks.values())) if masks else np.ones(self._n, bool)
        return ParsedQuery({a: frozenset(v) for a, v in found.items()}, mask, dict(masks))

    def with_tags(self, parsed: ParsedQuery, tags: dict[str, str]) -> ParsedQuery:
        """``parsed`` plus a constraint per tagged attribute it does not constrain yet (values in any spelling;
        a value no item has is ignored)."""
        found = {a: set(v) for a, v in parsed.constraints.items()}
        masks = dict(parsed.masks)
        for a, raw in tags.items():
            value = normalize_query(str(raw))
            m = self._masks.get((a, value))
            if a in found or m is None:
                continue
            found[a], masks[a] = {value}, m
        return self._parsed(found, masks)


def attr_match(parser: QueryParser, index: CatalogIndex, query_norms: Sequence[str],
               item_ids: Sequence[str]) -> np.ndarray:
    """Per (query, item) row: how many attribute constraints recognized in the query the item satisfies
    (0 when none is recognized or the item is not in ``index``). One parse per distinct query."""
    pos = index.positions(list(item_ids))
    query_norms = list(query_norms)
    out = np.zeros(len(pos), dtype=np.float64)
    if query_norms and query_norms.count(query_norms[0]) == len(query_norms):   # one query (the scorer's call)
        groups = [(query_norms[0], np.arange(len(pos)))]
    else:
        queries = np.asarray(query_norms, dtype=object)
        groups = [(q, np.flatnonzero(queries == q)) for q in pd.unique(queries)]
    for q, rows in groups:
        parsed = parser.parse(str(q))
        if not parsed.masks:
            continue
        p = pos[rows]
        ok = p >= 0
        out[rows[ok]] = np.sum([m[p[ok]] for m in parsed.masks.values()], axis=0)
    return out


class StructuredStrategy:
    name = "structured"

    def __init__(self, index: CatalogIndex, parser: QueryParser,
                 tagger: Callable[[str], dict[str, str]] | None = None) -> None:
        self._index = index
        self._parser = parser
        self._tagger = tagger
        # The tagger is fixed for this strategy's life (a reload builds a new one), and tagging is a pure function
        # of the query text: each query is tagged once, not on every request (the near-spelling scan is ~0.1 ms).
        self._tags = QueryMemo(size=TAG_MEMO_SIZE)
        p = index.popularity
        self._prior = POPULARITY_PRIOR * (p / p.max() if len(p) and p.max() > 0 else np.zeros(len(p)))

    @property
    def parser(self) -> QueryParser:
        return self._parser

    def with_tagger(self, tagger: Callable[[str], dict[str, str]] | None) -> StructuredStrategy:
        """The same strategy with a query tagger (e.g. the attributes champion's ``tag_query``)."""
        return StructuredStrategy(self._index, self._parser, tagger)

    def parse(self, query: str) -> ParsedQuery:
        parsed = self._parser.parse(query)
        if self._tagger is not None:
            try:
                tags = self._tags.get(query, self._tagger)   # shared: with_tags only reads it
            except Exception:  # noqa: BLE001 - a tagger failure must not fail retrieval (and is not memoized)
                tags = {}
            if tags:
                parsed = self._parser.with_tags(parsed, tags)
        return parsed

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        parsed = self.parse(query)
        if parsed.mask is None:
            return []  # nothing recognized: not this strategy's query
        score = parsed.n_constraints + self._prior
        return candidates(self._index.item_ids, score, top_k(score, k, parsed.mask), self.name)
