"""Semantic retrieval: TF-IDF (word 1-2 grams) + TruncatedSVD item embeddings, served from an HNSW index.

The embeddings are trained on the catalog at build time (no downloaded model); the query is embedded the same
way. Retrieval searches a faiss ``IndexHNSWFlat`` (inner product over L2-normalised vectors = cosine): an
approximate nearest-neighbour graph whose search cost grows with log(catalog size) instead of linearly.
``score_items`` (the ranker's ``semantic_score`` feature) computes exact cosines of the given items only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from ml.retrieval.base import Candidate, CatalogIndex, QueryMemo, RankedCandidates, candidates, top_k
from ml.text import normalize_query

HNSW_M = 32                 # graph degree: faiss' usual default; recall vs memory
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH_MIN = 64     # search beam; raised to 2k for deep searches so recall holds at k = 1000
# A search whose beam is wide for the catalog visits most of the graph: an exact scan (one matrix-vector product)
# is then cheaper, and exact. Measured with 64-dim vectors on this machine (faiss HNSW, M 32, one thread): the
# scan costs ~15 us + 0.015 us per item, the graph ~0.7-2 us per unit of beam, so the scan wins below ~50 items
# per unit of beam (1,500 items: 27 vs 63 us at k 100, 40 vs 440 us at k 500; 100,000 items: HNSW 10x faster at
# k 10). docs/serving.md, "Performance".
EXACT_SCAN_ITEMS_PER_EF = 50


class SemanticStrategy:
    name = "semantic"

    def __init__(self, index: CatalogIndex, dims: int = 64, seed: int = 0, ann: bool = True,
                 exact_scan_items_per_ef: int = EXACT_SCAN_ITEMS_PER_EF) -> None:
        """``ann``: build the HNSW index; ``exact_scan_items_per_ef``: scan exactly instead when the catalog has at
        most this many items per unit of the search's beam (0: always search the graph)."""
        self._index = index
        self._exact_per_ef = exact_scan_items_per_ef
        self._vec: TfidfVectorizer | None = None
        self._proj: np.ndarray | None = None     # (n_features, dims)
        self._emb: np.ndarray | None = None      # (n_items, dims), rows L2-normalized
        self._ann: Any = None                    # faiss.IndexHNSWFlat over _emb (None: brute force)
        self._memo = QueryMemo()
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
        self._analyzer = vec.build_analyzer()
        self._emb = np.ascontiguousarray(_l2(emb))
        if ann:
            self._ann = _hnsw(self._emb, seed)

    @property
    def uses_ann(self) -> bool:
        """An HNSW index is built (a search of depth ``k`` uses it when ``scans_exactly(k)`` is false)."""
        return self._ann is not None

    def scans_exactly(self, k: int) -> bool:
        k = min(k, self._index.n)
        return self._ann is None or self._index.n <= self._exact_per_ef * max(HNSW_EF_SEARCH_MIN, 2 * k)

    def embed(self, query: str) -> np.ndarray | None:
        """The query's unit vector (None: no known term). Read-only (memoized: retrieve and score_items ask it)."""
        return self._memo.get(query, self._embed)

    def _embed(self, query: str) -> np.ndarray | None:
        if self._vec is None:
            return None
        q = self._tfidf_projection(query)
        n = np.linalg.norm(q)
        return q / n if n > 0 else None

    def _tfidf_projection(self, query: str) -> np.ndarray:
        """``self._vec.transform([query]) @ self._proj`` with the same floating-point operations in the same order,
        without scikit-learn's per-call validation and sparse-matrix construction (most of its cost for one query).

        Term counts in vocabulary-index order (``CountVectorizer``: sorted CSR indices), ``log(tf) + 1``
        (``sublinear_tf``), times idf, divided by the row's L2 norm (summed in index order, as
        ``inplace_csr_row_normalize_l2``), then the CSR-times-dense product's accumulation: a zero vector plus
        each term's weight times its projection row, in index order (scipy's ``csr_matvecs``). Equality with the
        scikit-learn path is tested (tests/serving/test_scorer_fast_path.py).
        """
        vocab = self._vec.vocabulary_
        counts: dict[int, int] = {}
        for term in self._analyzer(query):
            j = vocab.get(term)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        q = np.zeros(self._proj.shape[1])
        if not counts:
            return q
        idx = np.fromiter(sorted(counts), dtype=np.int64, count=len(counts))
        w = np.fromiter((counts[j] for j in idx.tolist()), dtype=np.float64, count=len(idx))
        np.log(w, w)                      # sublinear_tf (as configured in __init__), in place as scikit-learn
        w += 1.0
        w *= self._vec.idf_[idx]
        sq = 0.0
        for x in w.tolist():
            sq += x * x
        if sq != 0.0:
            w /= math.sqrt(sq)
        for x, j in zip(w.tolist(), idx.tolist()):
            q += x * self._proj[j]
        return q

    def scores(self, query: str) -> np.ndarray:
        """Exact cosine similarity of every item to the query (zeros when the query has no known term)."""
        q = self.embed(query)
        if q is None:
            return np.zeros(self._index.n)
        return self._emb @ q

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        q = self.embed(query)
        if q is None or k <= 0:
            return []
        ids = self._index.item_ids
        k = min(k, self._index.n)
        if self.scans_exactly(k):
            s = self._emb @ q
            return candidates(ids, s, top_k(s, k, s > 1e-6), self.name)
        self._ann.hnsw.efSearch = max(HNSW_EF_SEARCH_MIN, 2 * k)
        sims, pos = self._ann.search(q.astype(np.float32)[None, :], k)
        keep = (pos[0] >= 0) & (sims[0] > 1e-6)     # float32 comparison, as the scalar one it replaced
        return RankedCandidates(ids[pos[0][keep]], sims[0][keep], self.name)

    def score_items(self, query: str, item_ids: Sequence[str]) -> np.ndarray:
        q = self.embed(query)
        pos = self._index.positions(item_ids)
        if q is None or not len(pos):
            return np.zeros(len(item_ids))
        return np.where(pos >= 0, self._emb[np.maximum(pos, 0)] @ q, 0.0)


def _hnsw(emb: np.ndarray, seed: int) -> Any:
    """A faiss HNSW index (inner product) over the item embeddings, built once at load time."""
    import faiss

    faiss.omp_set_num_threads(1)          # the scorer is one request per thread; the machine is shared
    index = faiss.IndexHNSWFlat(emb.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(np.ascontiguousarray(emb, dtype=np.float32))
    return index


def _l2(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(n > 0, n, 1.0)
