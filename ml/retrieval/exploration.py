"""Exploration: a random sample biased to new and rarely shown items, deterministic per request id.

The generator is seeded from (seed, request_id), so replaying a logged request reproduces its sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ml.retrieval.base import Candidate, CatalogIndex, candidates, top_k

NEW_ITEM_HALF_LIFE_DAYS = 14.0
NEW_ITEM_BOOST = 3.0  # a brand-new, never-clicked item weighs (1 + 3) times an old one


def request_rng(seed: int, request_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, request_id) (stable across processes, unlike hash())."""
    digest = hashlib.blake2b(f"{seed}:{request_id}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class ExplorationStrategy:
    name = "exploration"

    def __init__(self, index: CatalogIndex, seed: int = 0) -> None:
        self._index = index
        self._seed = seed
        newness = np.exp2(-index.age_days / NEW_ITEM_HALF_LIFE_DAYS)
        self.weights = (1.0 + NEW_ITEM_BOOST * newness) / (1.0 + index.popularity)

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        if not self._index.n:
            return []
        rng = request_rng(self._seed, str(context.get("request_id", "")))
        # Weighted sampling without replacement (Efraimidis-Spirakis): keep the k largest log(u) / w.
        keys = np.log(rng.random(self._index.n)) / self.weights
        return candidates(self._index.item_ids, self.weights, top_k(keys, k), self.name)
