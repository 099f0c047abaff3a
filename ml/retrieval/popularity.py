"""Popularity retrieval: most popular items, within the query's recognized category when there is one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.retrieval.base import Candidate, CatalogIndex, candidates, top_k
from ml.retrieval.structured import QueryParser


class PopularityStrategy:
    name = "popularity"

    def __init__(self, index: CatalogIndex, parser: QueryParser) -> None:
        self._index = index
        self._parser = parser
        order = top_k(index.popularity, index.n)   # global order, precomputed
        self._ranked = candidates(index.item_ids, index.popularity, order, self.name)

    def top(self, k: int, exclude: set[str] | None = None) -> Sequence[Candidate]:
        """Globally most popular items (used to top up short candidate lists)."""
        if not exclude:
            return self._ranked.head(k)
        out: list[Candidate] = []
        for c in self._ranked:
            if len(out) >= k:
                break
            if c.item_id not in exclude:
                out.append(c)
        return out

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        parsed = self._parser.parse(query)
        if "category" in parsed.constraints:
            cats = parsed.constraints["category"]
            mask = np.isin(self._index.attrs["category"], list(cats))
            if mask.any():
                pop = self._index.popularity
                return candidates(self._index.item_ids, pop, top_k(pop, k, mask), self.name)
        return self.top(k)

    def score_items(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        pos = self._index.positions(item_ids)
        pop = self._index.popularity
        return np.where(pos >= 0, pop[pos] if len(pop) else 0.0, 0.0)
