"""Memory retrieval: what the Q2E model remembers worked for this exact (normalized) query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.retrieval.base import Candidate, CatalogIndex
from ml.text import normalize_query

SCORE_DEPTH = 1000  # how deep score_items looks into the memory for one query


class MemoryStrategy:
    name = "memory"

    def __init__(self, index: CatalogIndex, q2e_model: Any | None = None) -> None:
        self._index = index
        self._model = q2e_model

    def _lookup(self, query: str, k: int) -> list[tuple[str, float]]:
        if self._model is None or k <= 0:
            return []
        known = self._index.position
        return [(str(i), float(s)) for i, s in self._model.lookup(normalize_query(query), k) if str(i) in known]

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        return [Candidate(i, s, self.name) for i, s in self._lookup(query, k)[:k]]

    def score_items(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        if self._model is None:
            return np.zeros(len(item_ids))
        mem = dict(self._lookup(query, SCORE_DEPTH))
        return np.fromiter((mem.get(i, 0.0) for i in item_ids), dtype=np.float64, count=len(item_ids))
