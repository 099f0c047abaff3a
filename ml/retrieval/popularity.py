"""Popularity retrieval: most popular items, within the query's recognized category when there is one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.retrieval.base import Candidate, CatalogIndex, top_k
from ml.retrieval.structured import QueryParser


class PopularityStrategy:
    name = "popularity"

    def __init__(self, index: CatalogIndex, parser: QueryParser) -> None:
        self._index = index
        self._parser = parser
        self._order = top_k(index.popularity, index.n)   # global order, precomputed

    def top(self, k: int, exclude: set[str] | None = None) -> list[Candidate]:
        """Globally most popular items (used to top up short candidate lists)."""
        ids, pop, out = self._index.item_ids, self._index.popularity, []
        for i in self._order:
            if len(out) >= k:
                break
            if exclude is None or ids[i] not in exclude:
                out.append(Candidate(ids[i], float(pop[i]), self.name))
        return out

    def retrieve(self, query: str, context: dict, k: int) -> list[Candidate]:
        parsed = self._parser.parse(query)
        if "category" in parsed.constraints:
            cats = parsed.constraints["category"]
            mask = np.isin(self._index.attrs["category"], list(cats))
            if mask.any():
                ids, pop = self._index.item_ids, self._index.popularity
                return [Candidate(ids[i], float(pop[i]), self.name) for i in top_k(pop, k, mask)]
        return self.top(k)

    def score_items(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        pos = self._index.positions(item_ids)
        pop = self._index.popularity
        return np.where(pos >= 0, pop[pos] if len(pop) else 0.0, 0.0)
