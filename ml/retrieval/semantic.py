"""Semantic retrieval: TF-IDF (word 1-2 grams) + TruncatedSVD item embeddings, cosine by brute force.

Trained on the catalog at build time; the query is embedded the same way. (ANN search is a later issue:
at a few thousand items a dense matrix-vector product is well under a millisecond.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from ml.retrieval.base import Candidate, CatalogIndex, top_k
from ml.text import normalize_query


class SemanticStrategy:
    name = "semantic"

    def __init__(self, index: CatalogIndex, dims: int = 64, seed: int = 0) -> None:
        self._index = index
        self._vec: TfidfVectorizer | None = None
        self._proj: np.ndarray | None = None     # (n_features, dims)
        self._emb: np.ndarray | None = None      # (n_items, dims), rows L2-normalized
        if not index.n:
            return
        vec = TfidfVectorizer(ngram_range=(1, 2), preprocessor=normalize_query, sublinear_tf=True)
        try:
            X = vec.fit_transform(index.texts)
        except ValueError:  # empty vocabulary
            return
        n_comp = min(dims, X.shape[1] - 1, X.shape[0] - 1)
        if n_comp >= 1:
            svd = TruncatedSVD(n_components=n_comp, random_state=seed)
            emb = svd.fit_transform(X)
            proj = svd.components_.T
        else:  # degenerate catalog (one item or one term): plain TF-IDF space
            emb, proj = X.toarray(), np.eye(X.shape[1])
        self._vec, self._proj = vec, np.ascontiguousarray(proj)
        self._emb = np.ascontiguousarray(_l2(emb))

    def embed(self, query: str) -> np.ndarray | None:
        if self._vec is None:
            return None
        q = self._vec.transform([query]) @ self._proj
        q = np.asarray(q).ravel()
        n = np.linalg.norm(q)
        return q / n if n > 0 else None

    def scores(self, query: str) -> np.ndarray:
        """Cosine similarity of every item to the query (zeros when the query has no known term)."""
        q = self.embed(query)
        if q is None:
            return np.zeros(self._index.n)
        return self._emb @ q

    def retrieve(self, query: str, context: dict, k: int) -> list[Candidate]:
        s = self.scores(query)
        if not len(s):
            return []
        ids = self._index.item_ids
        return [Candidate(ids[i], float(s[i]), self.name) for i in top_k(s, k, s > 1e-6)]

    def score_items(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        pos = self._index.positions(item_ids)
        s = self.scores(query)
        return np.where(pos >= 0, s[pos] if len(s) else 0.0, 0.0)


def _l2(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)
