"""Each retrieval strategy on a tiny hand-made catalog with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.events.schema import STRATEGIES
from ml.retrieval import SCORE_COLUMNS, Candidate, build_strategies, candidate_scores

T0 = pd.Timestamp("2024-01-01", tz="UTC")

ITEMS = [
    # item_id, title, description, category, brand, color, material
    ("a", "Red Leather Shoes", "Classic red leather shoes for formal occasions", "Shoes", "Acme", "Red", "Leather"),
    ("b", "Blue Leather Shoes", "Classic blue leather shoes", "Shoes", "Acme", "Blue", "Leather"),
    ("c", "Red Canvas Shoes", "Casual red canvas shoes", "Shoes", "Zeta", "Red", "Canvas"),
    ("d", "Red Leather Bag", "A red leather bag for work", "Bags", "Acme", "Red", "Leather"),
    ("e", "Running Sneakers", "Lightweight sneakers for running and jogging", "Shoes", "Swift", "White", "Mesh"),
    ("f", "Jogging Trainers", "Comfortable trainers for running and jogging", "Shoes", "Swift", "Black", "Mesh"),
    ("g", "Wool Winter Sweater", "Warm knitted sweater for cold days", "Sweaters", "Nord", "Grey", "Wool"),
    ("h", "Cotton Summer Shirt", "Breathable cotton shirt for hot days", "Shirts", "Nord", "White", "Cotton"),
    ("i", "Oxford Dress Shoe", "Polished oxford for the office", "Shoes", "Acme", "Red", "Leather"),
    ("j", "Plain Shoe", "A shoe whose colour the catalog does not know", "Shoes", "Zeta", None, "Leather"),
]


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    rows = [dict(zip(("item_id", "title", "description", "category", "brand", "color", "material"), r))
            for r in ITEMS]
    frame = pd.DataFrame(rows)
    frame["price"] = 10.0
    frame["created_at"] = [T0 + pd.Timedelta(days=i) for i in range(len(frame))]
    return frame


POPULARITY = pd.Series({"a": 5.0, "b": 1.0, "c": 3.0, "d": 4.0, "e": 2.0, "f": 0.5, "g": 6.0, "h": 0.1, "i": 0.2})


@pytest.fixture(scope="module")
def strategies(catalog):
    return build_strategies(catalog, POPULARITY, semantic_dims=4)


def ids(cands: list[Candidate]) -> list[str]:
    return [c.item_id for c in cands]


def test_build_gives_every_strategy_in_contract_order(strategies):
    assert tuple(strategies) == STRATEGIES
    assert all(s.name == n for n, s in strategies.items())


@pytest.mark.parametrize("query, expected", [("Jogging Trainers", "f"), ("red leather bag", "d"),
                                             ("wool winter sweater", "g")])
def test_lexical_exact_title_ranks_that_item_first(strategies, query, expected):
    got = strategies["lexical"].retrieve(query, {}, 5)
    assert got[0].item_id == expected
    assert all(c.strategy == "lexical" for c in got)
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)


def test_lexical_score_items_aligns_and_zeroes_unknown(strategies):
    s = strategies["lexical"].score_items("jogging trainers", ["f", "h", "nope"])
    assert s[0] > 0 and s[1] == 0 and s[2] == 0


def test_structured_red_leather_shoes_returns_only_red_leather_shoes(strategies):
    got = strategies["structured"].retrieve("red leather shoes", {}, 10)
    assert sorted(ids(got)) == ["a", "i"]       # "i" has no "red" in its text: attributes, not words
    assert got[0].item_id == "a"                 # popularity prior breaks the tie
    assert got[0].score > 3.0 > got[0].score - 1  # three constraints + prior


def test_structured_alternatives_within_one_attribute(strategies):
    got = strategies["structured"].retrieve("red blue leather shoe", {}, 10)
    assert sorted(ids(got)) == ["a", "b", "i"]


def test_structured_nothing_recognized_is_empty(strategies):
    assert strategies["structured"].retrieve("something else entirely", {}, 10) == []


def test_structured_uses_filled_attributes(catalog):
    filled = build_strategies(catalog, POPULARITY, attribute_predictions={"j": {"color": "Red"}}, semantic_dims=4)
    assert "j" in ids(filled["structured"].retrieve("red leather shoes", {}, 10))


def test_semantic_puts_related_item_above_unrelated(strategies):
    sem = strategies["semantic"]
    s = sem.score_items("sneakers", ["f", "g", "h"])
    assert s[0] > s[1] and s[0] > s[2]          # trainers share running/jogging with sneakers
    got = ids(sem.retrieve("sneakers", {}, 3))
    assert set(got[:2]) == {"e", "f"}               # the sneaker itself and its synonym


def test_memory_wraps_q2e_and_is_empty_without_one(catalog):
    class FakeQ2E:
        def lookup(self, query_norm, k):
            assert query_norm == "red shoe"
            return [("c", 0.9), ("unknown-item", 0.8), ("a", 0.5)][:k]

    with_mem = build_strategies(catalog, POPULARITY, q2e_model=FakeQ2E(), semantic_dims=4)
    assert ids(with_mem["memory"].retrieve("Red Shoes", {}, 3)) == ["c", "a"]
    assert list(with_mem["memory"].score_items("red shoes", ["a", "b"])) == [0.5, 0.0]
    no_mem = build_strategies(catalog, POPULARITY, semantic_dims=4)
    assert no_mem["memory"].retrieve("red shoes", {}, 3) == []


def test_popularity_order_and_category(strategies):
    assert ids(strategies["popularity"].retrieve("anything at all", {}, 4)) == ["g", "a", "d", "c"]
    assert ids(strategies["popularity"].retrieve("shoes", {}, 3)) == ["a", "c", "e"]


def test_exploration_is_deterministic_per_request_and_favours_new_items():
    n = 200
    frame = pd.DataFrame({
        "item_id": [f"x{i}" for i in range(n)], "title": "thing", "description": "", "category": "Misc",
        "brand": None, "color": None, "material": None, "price": 1.0,
        # the last 20 items are new; the rest a year old and often clicked
        "created_at": [T0 if i < n - 20 else T0 + pd.Timedelta(days=365) for i in range(n)],
    })
    pop = pd.Series({f"x{i}": 2.0 for i in range(n - 20)})
    expl = build_strategies(frame, pop, seed=7, semantic_dims=4)["exploration"]
    first = ids(expl.retrieve("q", {"request_id": "r-1"}, 10))
    assert first == ids(expl.retrieve("other query", {"request_id": "r-1"}, 10))
    assert first != ids(expl.retrieve("q", {"request_id": "r-2"}, 10))
    new = {f"x{i}" for i in range(n - 20, n)}
    share_new = np.mean([len(new & set(ids(expl.retrieve("q", {"request_id": f"r{j}"}, 10)))) / 10
                         for j in range(50)])
    assert share_new > 0.4   # 10% of the catalog, far more of the sample


def test_candidate_scores_every_candidate_gets_every_feature(strategies):
    cands = [Candidate("a", 0.3, "exploration"), Candidate("g", 0.1, "exploration")]
    frame = candidate_scores(strategies, "red leather shoes", cands)
    assert list(frame.columns) == ["item_id", "strategy", "retrieval_score", *SCORE_COLUMNS]
    a, g = frame.iloc[0], frame.iloc[1]
    assert a.lexical_score > 0 and g.lexical_score == 0
    assert a.semantic_score > g.semantic_score
    assert (a.popularity_score, g.popularity_score) == (5.0, 6.0)
    assert candidate_scores(strategies, "x", []).empty


def test_empty_catalog_builds_and_returns_nothing(catalog):
    empty = build_strategies(catalog.iloc[0:0], None)
    assert all(s.retrieve("red shoes", {"request_id": "r"}, 5) == [] for s in empty.values())


# ---- structured: query tagger and the attr_match ranker feature -------------------------------------------

def test_structured_tagger_adds_a_constraint_the_vocabulary_missed(strategies):
    plain = strategies["structured"]
    assert plain.retrieve("acme shoez", {}, 10) != []                   # "acme" alone: 4 items
    tagged = plain.with_tagger(lambda q: {"color": "Blue"} if "blu" in q else {})
    got = tagged.retrieve("acme blu shoes", {}, 10)
    assert ids(got) == ["b"]
    assert tagged.retrieve("acme shoes", {}, 10) == plain.retrieve("acme shoes", {}, 10)
    broken = plain.with_tagger(lambda q: 1 / 0)
    assert broken.retrieve("red leather shoes", {}, 10) == plain.retrieve("red leather shoes", {}, 10)


def test_attr_match_counts_satisfied_constraints_same_for_training_and_serving(catalog, tmp_path):
    from ml.families.ranker import ranker_frame, with_attr_match
    from ml.retrieval import build_retrieval
    from ml.retrieval.structured import attr_match

    filled = {"j": {"color": "Red"}}
    retrieval = build_retrieval(catalog, POPULARITY, attribute_predictions=filled, semantic_dims=4)
    parser, index = retrieval.strategies["structured"].parser, retrieval.index
    rows = [("red leather shoe", "a"), ("red leather shoe", "b"), ("red leather shoe", "j"),
            ("red leather shoe", "g"), ("something else", "a"), ("red leather shoe", "zzz")]
    serving = attr_match(parser, index, [q for q, _ in rows], [i for _, i in rows])
    assert serving.tolist() == [3.0, 2.0, 3.0, 0.0, 0.0, 0.0]   # red, leather, shoe (j: red filled)
    # training: dim_items + item_attributes.parquet, through the ranker's training-set helper
    from ml.backfill import write_item_attributes
    catalog.to_parquet(tmp_path / "dim_items.parquet")
    write_item_attributes(pd.DataFrame({
        "item_id": ["j"], "attribute": ["color"], "value": ["Red"], "confidence": [0.9], "uncertainty": ["low"],
        "uncertainty_std": [0.01], "source": ["extracted"], "model_version": ["1"]}), tmp_path)
    frame = pd.DataFrame({"query_norm": [q for q, _ in rows], "item_id": [i for _, i in rows]})
    training = with_attr_match(frame, tmp_path)["attr_match"].to_numpy()
    np.testing.assert_array_equal(training, serving)
    assert ranker_frame(with_attr_match(frame, tmp_path))["attr_match"].tolist() == serving.tolist()
    assert (ranker_frame(frame)["attr_match"] == 0).all()                 # absent column: default 0
    assert (with_attr_match(frame, tmp_path / "no-marts")["attr_match"] == 0).all()


def test_probes_and_plans_from_one_retrieval_per_strategy(strategies):
    """retrieve_all at the full budget gives the probes (count, top score per strategy) and, as prefixes, the same
    plan candidates as retrieving the plan's strategies at their own budgets."""
    from ml.events.schema import STRATEGIES
    from ml.retrieval import retrieve_all, retrieve_plan, strategy_probes

    ctx = {"request_id": "r1"}
    lists = retrieve_all(strategies, "red leather shoes", ctx, 20)
    counts, scores = strategy_probes(lists)
    assert len(counts) == len(scores) == len(STRATEGIES)
    for s, c, t in zip(STRATEGIES, counts, scores):
        direct = strategies[s].retrieve("red leather shoes", ctx, 20)
        assert c == len(direct)
        assert (t is None) if not direct else t == direct[0].score
    names, budgets = ["lexical", "structured"], [10, 10]
    via_prefix = retrieve_plan(strategies, names, budgets, "red leather shoes", ctx, lists)
    direct_plan = retrieve_plan(strategies, names, budgets, "red leather shoes", ctx)
    assert [c.item_id for c in via_prefix] == [c.item_id for c in direct_plan]


def test_ranked_candidates_read_like_the_list_they_replace():
    """Strategies return ``RankedCandidates`` (tuples built when read): index, slice, iterate and compare like a
    list of ``Candidate`` with Python str and float fields; ``head`` is the same prefix, still lazy."""
    from ml.retrieval.base import RankedCandidates, candidates

    ids = np.asarray(["x", "y", "z", "w"], dtype=object)
    scores = np.asarray([0.5, 2.0, 1.0, 3.0], dtype=np.float32)
    got = candidates(ids, scores, np.asarray([3, 1, 2]), "lexical")
    want = [Candidate("w", 3.0, "lexical"), Candidate("y", 2.0, "lexical"), Candidate("z", 1.0, "lexical")]
    assert isinstance(got, RankedCandidates) and len(got) == 3 and bool(got)
    assert got == want and list(got) == want and got[:2] == want[:2] and got[-1] == want[-1]
    assert type(got[0].item_id) is str and type(got[0].score) is float and type(got[:1][0].score) is float
    assert got.head(2) == want[:2] and isinstance(got.head(2), RankedCandidates) and got.head(0) == []
    assert got != want[:2] and not candidates(ids, scores, np.zeros(0, dtype=np.int64), "lexical")
    # concatenation, as with the list (bench_bandit's page top-up once raised TypeError on ``list + got``)
    extra = [Candidate("v", 0.1, "popularity")]
    assert got + extra == want + extra and extra + got == extra + want and type(extra + got) is list
    assert got + got.head(1) == want + want[:1] and type(got + got) is list
    with pytest.raises(IndexError):
        got[3]
