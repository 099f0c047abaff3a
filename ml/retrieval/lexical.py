"""Lexical retrieval: BM25 (bm25s) over title + description, tokens normalized like queries, with a popularity
prior on the retrieval order.

Among items that match the query (BM25 > 0), the order uses ``bm25 * (1 + POPULARITY_PRIOR * pop)`` with ``pop``
the item's popularity scaled to [0, 1] (log1p, divided by the catalog's maximum): equal text matches go to the
item shoppers engage with, while a clearly better text match still wins (the prior moves a score by at most 15%).
``score_items`` (the ranker's ``lexical_score`` feature) stays plain BM25, so the ranker sees popularity once.
"""

from __future__ import annotations

from collections.abc import Sequence

import bm25s
import numpy as np

from ml.retrieval.base import Candidate, CatalogIndex, QueryMemo, candidates, top_k
from ml.text import tokenize

POPULARITY_PRIOR = 0.15


class LexicalStrategy:
    name = "lexical"

    def __init__(self, index: CatalogIndex, popularity_prior: float = POPULARITY_PRIOR) -> None:
        self._index = index
        self._bm25: bm25s.BM25 | None = None
        self._memo = QueryMemo()
        pop = np.log1p(np.clip(index.popularity, 0.0, None))
        self._prior = 1.0 + popularity_prior * (pop / pop.max() if len(pop) and pop.max() > 0 else pop)
        if index.n:
            corpus = [tokenize(t) or [""] for t in index.texts]
            self._bm25 = bm25s.BM25()
            self._bm25.index(corpus, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every catalog item for ``query`` (zeros when no token is known). Read-only (memoized)."""
        return self._memo.get(query, self._scores)

    def _scores(self, query: str) -> np.ndarray:
        if self._bm25 is None:
            return np.zeros(0)
        tokens = tokenize(query)
        if not tokens:
            return np.zeros(self._index.n)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float64)

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        s = self.scores(query)
        if not len(s):
            return []
        ranked = s * self._prior
        return candidates(self._index.item_ids, ranked, top_k(ranked, k, s > 0), self.name)

    def score_items(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        pos = self._index.positions(item_ids)
        s = self.scores(query)
        return np.where(pos >= 0, s[pos] if len(s) else 0.0, 0.0)
