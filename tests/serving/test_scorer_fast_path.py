"""The scorer's column-wise hot path gives the shared feature functions exactly the input the per-row frames gave.

``Scorer._rank_scores`` used to build the candidates' features as a frame from per-row dicts
(``DataFrame.from_records`` + ``where`` + ``concat``); it now builds columns (``_feature_columns`` over the store's columns,
``candidate_columns``). The model input is what matters: ``ranker_frame`` and the conversion model's matrix,
the functions training uses, must return exactly the same numbers from both. Also: the per-query memo of the
retrieval strategies returns what the uncached computation returns, read-only.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.families.conversion import _matrix
from ml.families.ranker import ranker_frame
from ml.features import DEFAULTS, RANKER_FEATURES
from ml.retrieval import Candidate, build_strategies, candidate_columns, candidate_scores
from ml.retrieval.base import QueryMemo
from serving.scorer import _feature_column, _feature_columns, rows_to_columns

RETRIEVAL_COLS = ("item_id", "strategy", "retrieval_score", "lexical_score", "semantic_score", "memory_score",
                  "popularity_score")


def _candidates(n: int, rng: np.random.Generator) -> dict:
    return {
        "item_id": [f"i{j}" for j in range(n)],
        "strategy": [("lexical", "semantic", "popularity")[j % 3] for j in range(n)],
        **{c: rng.random(n) for c in RETRIEVAL_COLS[2:]},
    }


def _old_frame(cols: dict, rows: list[dict]) -> pd.DataFrame:
    """The per-row construction the scorer used before (kept here as the reference)."""
    frame = pd.DataFrame(cols)
    names = [n for n in DEFAULTS if n not in frame.columns]
    feats = pd.DataFrame.from_records(rows, columns=names).astype(object)
    feats = feats.where(feats.notna(), pd.Series({n: DEFAULTS[n] for n in names}), axis=1)
    return pd.concat([frame.reset_index(drop=True), feats], axis=1)


def _new_frame(cols: dict, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({**cols, **_feature_columns(rows_to_columns(rows), [n for n in DEFAULTS if n not in cols],
                                                    len(rows))})


def _store_rows(n: int, rng: np.random.Generator, *, ragged: bool, strings: bool) -> list[dict]:
    """Rows as the online reader returns them: every feature of the service, None where the store has none."""
    served = [n_ for n_ in DEFAULTS if n_.startswith(("i_", "qi_", "q_n", "q_ctr", "price", "category"))]
    rows = []
    for j in range(n):
        row = {}
        for k, name in enumerate(served):
            r = rng.random()
            if name == "category":
                row[name] = None if r < 0.3 else (("shoes", "bags")[j % 2] if strings else float(j))
            elif r < 0.15:
                row[name] = None
            elif r < 0.25:
                row[name] = math.nan
            elif r < 0.35:
                row[name] = int(j * k)                # an int64_val feature
            elif r < 0.40:
                row[name] = 0.0                       # price 0: the scorer falls back to the catalog price
            else:
                row[name] = float(rng.normal())
        if ragged and j % 7 == 3:
            row.pop(served[1])                      # a row missing a key the others have
            row["unrelated"] = 1.0
        rows.append(row)
    return rows


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("strings", [False, True])
def test_model_inputs_equal_the_per_row_frame(ragged: bool, strings: bool) -> None:
    rng = np.random.default_rng(3)
    cols = _candidates(60, rng)
    rows = _store_rows(60, rng, ragged=ragged, strings=strings)
    old, new = _old_frame(cols, rows), _new_frame(cols, rows)
    assert list(old.columns) == list(new.columns)
    p_conv = rng.random(60)
    a = ranker_frame(old, {"p_conversion": p_conv})
    b = ranker_frame(new, {"p_conversion": p_conv})
    assert list(a.columns) == list(b.columns) == list(RANKER_FEATURES)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
    # the conversion model reads its own columns from the same frame (including string-valued ones)
    feats = [*DEFAULTS, "retrieval_score", "not_a_column"]
    np.testing.assert_array_equal(_matrix(old, feats), _matrix(new, feats))
    # and every default-filled column holds the same numbers (the frames differ only in dtype: float vs object)
    for name in DEFAULTS:
        x = pd.to_numeric(old[name], errors="coerce").to_numpy(dtype=np.float64)
        y = pd.to_numeric(pd.Series(new[name]), errors="coerce").to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_feature_columns_without_store_rows_are_the_defaults() -> None:
    names = [n for n in DEFAULTS][:5]
    for store_answer in ({}, rows_to_columns([{} for _ in range(4)])):   # unreachable store; nothing stored
        got = _feature_columns(store_answer, names, 4)
        assert list(got) == names
        for n in names:
            np.testing.assert_array_equal(got[n], np.full(4, DEFAULTS[n]))
    assert _feature_column([None, math.nan, 2], "x").tolist() == [0.0, 0.0, 2.0]


CATALOG = pd.DataFrame({
    "item_id": list("abcdef"),
    "title": ["Red Leather Shoes", "Blue Leather Shoes", "Red Canvas Shoes", "Red Leather Bag", "Running Sneakers",
              "Wool Sweater"],
    "description": ["classic", "classic blue", "casual red", "work bag", "running and jogging", "warm knit"],
    "category": ["Shoes", "Shoes", "Shoes", "Bags", "Shoes", "Sweaters"],
    "brand": ["Acme", "Acme", "Zeta", "Acme", "Swift", "Nord"],
    "color": ["Red", "Blue", "Red", "Red", "White", "Grey"],
    "material": ["Leather", "Leather", "Canvas", "Leather", "Mesh", "Wool"],
    "price": [10.0, 12.0, 8.0, 30.0, 50.0, 40.0],
    "created_at": pd.date_range("2024-01-01", periods=6, tz="UTC"),
})


def test_candidate_columns_is_candidate_scores() -> None:
    strategies = build_strategies(CATALOG, pd.Series({"a": 3.0, "d": 1.0}), semantic_dims=4)
    cands = [Candidate("a", 2.0, "lexical"), Candidate("d", 1.5, "structured"), Candidate("zz", 0.1, "exploration")]
    cols = candidate_columns(strategies, "red leather shoes", cands)
    frame = candidate_scores(strategies, "red leather shoes", cands)
    pd.testing.assert_frame_equal(pd.DataFrame(cols), frame)
    assert cols["item_id"] == ["a", "d", "zz"] and cols["strategy"] == ["lexical", "structured", "exploration"]


def test_memoized_strategies_answer_like_fresh_ones() -> None:
    warm = build_strategies(CATALOG, None, semantic_dims=4)
    for q in ("red leather shoes", "running", "red leather shoes", "nothing known", "wool", "red leather shoes"):
        fresh = build_strategies(CATALOG, None, semantic_dims=4)   # an empty memo: computes from scratch
        for name in ("lexical", "semantic", "structured"):
            got = warm[name].retrieve(q, {}, 5)
            assert got == fresh[name].retrieve(q, {}, 5), (name, q)
        np.testing.assert_array_equal(warm["lexical"].scores(q), fresh["lexical"].scores(q))
        assert not warm["lexical"].scores(q).flags.writeable          # shared: must not be modified


def test_query_memo_is_bounded_and_computes_once_per_key() -> None:
    calls: list[str] = []
    memo = QueryMemo(size=2)

    def compute(k: str) -> np.ndarray:
        calls.append(k)
        return np.arange(3)

    assert memo.get("a", compute) is memo.get("a", compute)
    memo.get("b", compute)
    memo.get("c", compute)          # evicts "a"
    memo.get("a", compute)
    assert calls == ["a", "b", "c", "a"]
    with pytest.raises(ValueError):
        memo.get("a", compute)[0] = 5


def test_bandit_example_with_cached_action_lines_is_the_shared_formatter() -> None:
    from ml.families.bandit import ACTION_SETS, BanditPolicy, action_features, bandit_context, to_vw_example

    policy = BanditPolicy(workspace=None, actions=list(ACTION_SETS["pairs_all"]))
    shared = bandit_context("red leather shoes", "mobile", 14, {"q_n_requests": 3.0, "q_ctr": 0.2},
                            ([5, 2, 100, 0, 100, 100], [3.2, 2.05, 0.8, None, 40.0, 1.5]))
    feats_a = {"lexical": {"s_n_decisions": 10.0, "s_reward_rate": 0.3}, "semantic": {"s_n_decisions": None}}
    feats_b = {"lexical": {"s_n_decisions": 11.0, "s_reward_rate": 0.3}}
    unhashable = {"memory": {"s_reward_rate": 0.1, "extra": [1.0]}}   # a list value: not a cache key
    for feats in (feats_a, feats_b, feats_a, None, unhashable):
        expected = to_vw_example(shared, [action_features(a, feats) for a in policy.actions], None)
        assert policy.example(shared, feats) == expected
    assert len(policy._action_lines) == 3      # feats_a, feats_b, None; the unhashable one is not cached


def _plain_columns(n: int, rng: np.random.Generator) -> dict:
    """Candidate columns as the scorer holds them: lists of str, float arrays, an object column with strings and
    None (a string-valued feature), an int column, and no column at all for some features."""
    cols = _candidates(n, rng)
    cols.update({
        "i_ctr": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
        "qi_clicks": rng.integers(0, 5, n),
        "price": rng.random(n) * 50,
        "category": np.array([("shoes", None, "1.5")[j % 3] for j in range(n)], dtype=object),
        "attr_match": rng.integers(0, 3, n).astype(np.float64),
    })
    return cols


def test_model_inputs_from_plain_columns_equal_those_from_the_frame() -> None:
    """``ranker_matrix`` / the conversion matrix on the scorer's plain columns == training's frame path."""
    from ml.families.ranker import ranker_matrix

    rng = np.random.default_rng(5)
    cols = _plain_columns(40, rng)
    p_conv = rng.random(40)
    frame = pd.DataFrame(cols)
    np.testing.assert_array_equal(ranker_matrix(cols, {"p_conversion": p_conv}),
                                  ranker_frame(frame, {"p_conversion": p_conv}).to_numpy())
    feats = [*DEFAULTS, "retrieval_score", "category", "not_a_column"]
    np.testing.assert_array_equal(_matrix(cols, feats), _matrix(frame, feats))
    assert ranker_matrix({}, None).shape == (0, len(RANKER_FEATURES))


def test_ranker_scores_a_matrix_like_its_frame() -> None:
    """``RankerModel.score`` on ``ranker_matrix`` (the scorer) == on ``ranker_frame`` (training, MLflow pyfunc),
    also for a model whose stored feature order differs from ``RANKER_FEATURES``."""
    import xgboost as xgb

    from ml.families.ranker import RankerModel, ranker_matrix

    rng = np.random.default_rng(6)
    cols = _plain_columns(50, rng)
    names = list(RANKER_FEATURES)
    X = ranker_frame(pd.DataFrame(cols))
    for order in (names, names[::-1]):
        data = X[order].to_numpy(dtype=np.float32)
        booster = xgb.train({"objective": "rank:ndcg", "nthread": 1, "max_depth": 3},
                            xgb.DMatrix(data, label=rng.integers(0, 3, 50), group=[25, 25], feature_names=order),
                            num_boost_round=5)
        model = RankerModel(booster=booster, feature_names=order)
        np.testing.assert_array_equal(model.score(ranker_matrix(cols)), model.score(X))


def test_semantic_query_projection_is_scikit_learns_bit_for_bit() -> None:
    """The hand-rolled TF-IDF transform + projection gives exactly scikit-learn's ``transform(...) @ proj``."""
    from ml.retrieval.semantic import SemanticStrategy

    semantic = build_strategies(CATALOG, None, semantic_dims=4)["semantic"]
    assert isinstance(semantic, SemanticStrategy)
    words = " ".join(CATALOG["title"].tolist() + CATALOG["description"].tolist()).lower().split()
    rng = np.random.default_rng(7)
    queries = ["", "zzz unknown", "red red red leather", "Red Leather Shoes!", "running and jogging shoes"]
    queries += [" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(200)]
    for q in queries:
        expected = np.asarray(semantic._vec.transform([q]) @ semantic._proj).ravel()
        got = semantic._tfidf_projection(q)
        assert got.tobytes() == expected.tobytes(), q     # same bits, signed zeros included


@pytest.mark.parametrize("objective", ["rank:ndcg", "binary:logistic"])
def test_xgb_predict_is_inplace_predict(objective: str) -> None:
    """The per-thread proxy path returns exactly ``inplace_predict``'s numbers (NaN as missing), from any thread,
    and refuses a matrix of the wrong width."""
    from concurrent.futures import ThreadPoolExecutor

    import xgboost as xgb

    from ml.families.base import xgb_predict

    rng = np.random.default_rng(8)
    X = rng.random((300, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    extra = {"group": [150, 150]} if objective.startswith("rank") else {}
    booster = xgb.train({"objective": objective, "nthread": 1, "max_depth": 4},
                        xgb.DMatrix(X, label=rng.integers(0, 2, 300), **extra), num_boost_round=20)
    expected = booster.inplace_predict(X)
    np.testing.assert_array_equal(xgb_predict(booster, X), expected)
    np.testing.assert_array_equal(xgb_predict(booster, X[:7].astype(np.float64)), expected[:7])
    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(lambda _: xgb_predict(booster, X), range(8)):
            np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="matrix"):
        xgb_predict(booster, X[:, :5])
