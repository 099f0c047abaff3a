"""Semantic retrieval served from the HNSW index agrees with exact search; lexical's popularity prior orders equal
text matches by popularity without overturning a better match. Known answers on generated catalogs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.retrieval.base import build_index
from ml.retrieval.lexical import LexicalStrategy
from ml.retrieval.semantic import SemanticStrategy

T0 = pd.Timestamp("2024-01-01", tz="UTC")
WORDS = [f"w{i}" for i in range(400)]


def _catalog(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    topics = rng.integers(0, 40, n)
    titles = [" ".join(WORDS[t * 10 + j] for j in rng.choice(10, 4, replace=False)) for t in topics]
    return pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": titles, "description": "",
                         "category": "c", "price": 1.0, "created_at": T0})


@pytest.fixture(scope="module")
def semantic_pair():
    index = build_index(_catalog(3000, seed=1))
    # exact_scan_items_per_ef=0: always search the graph (3,000 items would otherwise be scanned exactly)
    return (SemanticStrategy(index, dims=32, ann=True, exact_scan_items_per_ef=0),
            SemanticStrategy(index, dims=32, ann=False))


@pytest.mark.parametrize("k", [10, 100])
def test_hnsw_recall_against_exact_search(semantic_pair, k):
    ann, exact = semantic_pair
    assert ann.uses_ann and not exact.uses_ann and not ann.scans_exactly(k)
    recalls = []
    for t in range(0, 40, 4):
        query = f"{WORDS[t * 10]} {WORDS[t * 10 + 3]}"
        truth = {c.item_id for c in exact.retrieve(query, {}, k)}
        got = [c.item_id for c in ann.retrieve(query, {}, k)]
        assert len(got) == len(set(got))
        recalls.append(len(truth & set(got)) / max(len(truth), 1))
    assert np.mean(recalls) >= 0.95, recalls


def test_hnsw_scores_are_the_exact_cosines(semantic_pair):
    ann, exact = semantic_pair
    got = ann.retrieve("w5 w7", {}, 20)
    exact_scores = exact.score_items("w5 w7", [c.item_id for c in got])
    np.testing.assert_allclose([c.score for c in got], exact_scores, atol=1e-5)
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)


def test_deep_search_on_a_small_catalog_scans_exactly():
    """A beam wide for the catalog scans every item instead of the graph: the exact answer, as exact search."""
    index = build_index(_catalog(3000, seed=2))
    # 10 items per unit of beam: k 10 (beam 64) searches the graph, k 500 (beam 1,000) scans the 3,000 items
    auto = SemanticStrategy(index, dims=32, ann=True, exact_scan_items_per_ef=10)
    exact = SemanticStrategy(index, dims=32, ann=False)
    assert auto.uses_ann and not auto.scans_exactly(10) and auto.scans_exactly(500)
    for query in ("w5 w7", "w100 w103", "w390"):
        assert auto.retrieve(query, {}, 500) == exact.retrieve(query, {}, 500)
        assert len(auto.retrieve(query, {}, 500)) > 0


def test_unknown_query_retrieves_nothing(semantic_pair):
    ann, _ = semantic_pair
    assert ann.retrieve("zzz qqq", {}, 10) == []


def test_lexical_popularity_prior_breaks_text_ties_but_not_better_matches():
    cat = pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["red canvas shoe", "red canvas shoe", "red canvas shoe classic", "blue wool hat"],
        "description": ["", "", "", ""], "category": "c", "price": 1.0, "created_at": T0})
    pop = pd.Series({"a": 0.0, "b": 50.0, "c": 0.0, "d": 100.0})
    lex = LexicalStrategy(build_index(cat, pop))
    got = [c.item_id for c in lex.retrieve("red canvas shoe", {}, 10)]
    assert got[:2] == ["b", "a"] and "d" not in got         # popular first among equal matches; no non-match
    plain = LexicalStrategy(build_index(cat, pop), popularity_prior=0.0)
    assert [c.item_id for c in plain.retrieve("red canvas shoe", {}, 10)][:2] == ["a", "b"]   # ties by position
    # the feature the ranker sees stays plain BM25
    np.testing.assert_allclose(lex.score_items("red canvas shoe", ["a", "b"]),
                               plain.score_items("red canvas shoe", ["a", "b"]))
    # a much better text match still beats a popular weaker one
    assert [c.item_id for c in lex.retrieve("classic", {}, 10)] == ["c"]
