"""Ranker family: the input frame, a known-answer LTR problem, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.families.base import NotEnoughData
from ml.families.ranker import (
    CONVERSION_DEFAULT,
    FAMILY,
    LetorFormatError,
    RankerModel,
    conversion_feature,
    ndcg_by_request,
    paired_bootstrap,
    position_bias_eta,
    ranker_frame,
    read_letor,
)
from ml.features import CONVERSION_FEATURE, RANKER_FEATURES


def _queries(n_queries: int, seed: int, n_items: int = 20) -> pd.DataFrame:
    """Label = a known function of two features (lexical + semantic score); logged positions are random."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        lex, sem = rng.random(n_items), rng.random(n_items)
        label = np.digitize(lex + sem, [1.0, 1.4, 1.7])
        pos = rng.permutation(n_items) + 1
        for i in range(n_items):
            rows.append({"request_id": f"s{seed}-r{q}", "position": int(pos[i]), "item_id": f"i{i}",
                         "strategy": "semantic" if i % 2 else "lexical", "lexical_score": lex[i],
                         "semantic_score": sem[i], "label": int(label[i])})
    return pd.DataFrame(rows)


class _ColumnScorer:
    """A baseline 'model' ordering by one column."""

    def __init__(self, column: str | None, seed: int = 0):
        self.column, self.rng = column, np.random.default_rng(seed)

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return X[self.column].to_numpy() if self.column else self.rng.random(len(X))


@pytest.fixture(scope="module")
def trained():
    params = {**FAMILY.default_params, "n_estimators": 60, "max_depth": 4}
    return FAMILY.train(_queries(150, seed=1), params)


def test_ranker_frame_has_the_feature_columns_in_order_filled_and_one_hot():
    cands = pd.DataFrame({"strategy": ["memory", "lexical"], "lexical_score": [0.5, np.nan],
                          "i_ctr": [0.1, None], "unrelated": ["x", "y"]})
    X = ranker_frame(cands)
    assert list(X.columns) == list(RANKER_FEATURES)
    assert not X.isna().any().any()
    assert X["from_memory"].tolist() == [1.0, 0.0] and X["from_lexical"].tolist() == [0.0, 1.0]
    assert X["lexical_score"].tolist() == [0.5, 0.0] and X["i_ctr"].tolist() == [0.1, 0.0]
    assert X["qi_ctr"].tolist() == [0.0, 0.0]          # absent column -> default


def test_ndcg_of_the_ideal_and_the_reversed_order():
    frame = pd.DataFrame({"request_id": ["a"] * 3 + ["b"] * 2, "label": [3, 1, 0, 0, 0], "position": [1, 2, 3, 1, 2]})
    assert ndcg_by_request(frame, np.array([3.0, 2, 1, 0, 0])).tolist() == [1.0]   # "b" has no positive: skipped
    assert ndcg_by_request(frame, np.array([1.0, 2, 3, 0, 0]))[0] < 0.7


def test_ranker_recovers_a_known_ordering(trained):
    holdout = _queries(40, seed=2)
    m = FAMILY.evaluate(trained, holdout)
    lexical_only = FAMILY.evaluate(_ColumnScorer("lexical_score"), holdout)["ndcg@10"]
    random_order = FAMILY.evaluate(_ColumnScorer(None), holdout)["ndcg@10"]
    assert m["ndcg@10"] > 0.9
    assert m["ndcg@10"] > lexical_only + 0.05 and m["ndcg@10"] > random_order + 0.2
    # Logged positions are random here, so the model must beat the logged-order baseline by a wide margin.
    assert m["baseline_ndcg@10"] < 0.75 and m["ndcg_lift@10"] == pytest.approx(m["ndcg@10"] - m["baseline_ndcg@10"])


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    FAMILY.save(trained, tmp_path / "m")
    loaded = FAMILY.load(tmp_path / "m")
    assert isinstance(loaded, RankerModel) and loaded.feature_names == list(RANKER_FEATURES)
    X = ranker_frame(_queries(5, seed=3))
    np.testing.assert_array_equal(loaded.score(X), trained.score(X))


def test_too_few_requests_with_signal_is_not_enough_data():
    frame = _queries(30, seed=4)
    frame.loc[frame["request_id"] != "s4-r0", "label"] = 0      # one request with a positive label
    with pytest.raises(NotEnoughData):
        FAMILY.train(frame, FAMILY.default_params)


def _shuffled_pages(n_requests: int, eta: float, seed: int) -> pd.DataFrame:
    """Shuffled pages: relevance from lexical + semantic, clicks only where examined (P = position^-eta)."""
    frame = _queries(n_requests, seed=seed, n_items=10)
    rng = np.random.default_rng(seed)
    examined = rng.random(len(frame)) < frame["position"].to_numpy(dtype=float) ** -eta
    return frame.assign(label=np.where(examined, frame["label"], 0), position_randomized=True)


def test_position_bias_is_recovered_from_shuffled_pages():
    eta = position_bias_eta(_shuffled_pages(400, eta=1.0, seed=3))
    assert eta is not None and 0.75 < eta < 1.25
    assert position_bias_eta(_shuffled_pages(400, eta=0.0, seed=4)) < 0.25
    assert position_bias_eta(_queries(20, seed=1)) is None               # no shuffled pages: nothing to fit


def test_evaluate_weights_clicks_by_inverse_examination_when_shuffled_pages_allow():
    """Served pages: clicks go to position 1 whatever the item (the champion's order, pure position bias)."""
    served = _queries(60, seed=5, n_items=10)
    served["label"] = (served["position"] == 1).astype(int) * 2
    frame = pd.concat([served.assign(position_randomized=False), _shuffled_pages(60, eta=1.0, seed=6)])
    good = _ColumnScorer("lexical_score")
    weighted = FAMILY.evaluate(good, frame)
    assert weighted["ips_weighted"] == 1.0 and 0.5 < weighted["position_bias_eta"] < 1.5
    unweighted = FAMILY.evaluate(good, served)
    assert unweighted["ips_weighted"] == 0.0
    # the logged (biased) order looks perfect on its own clicks; the IPS weights take that advantage away
    assert unweighted["baseline_ndcg@10"] == pytest.approx(1.0)
    assert weighted["ndcg_lift@10"] > unweighted["ndcg_lift@10"]


# ---- position-bias-corrected training, the paired gate, the conversion feature, LETOR files ----------------

def _biased_logs(n_requests: int, seed: int, eta: float = 1.5, explore: float = 0.15) -> tuple[pd.DataFrame, np.ndarray]:
    """Graded relevance from lexical_score only; pages served in semantic_score order (unrelated to relevance), so
    with position bias the raw clicks credit semantic_score. A share of pages is shuffled (position exploration).
    Returns the logged frame (click labels) and the true relevance grade per row."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for q in range(n_requests):
        lex, sem = rng.random(10), rng.random(10)
        rel = np.digitize(lex, [0.4, 0.7, 0.9])
        shuffled = rng.random() < explore
        pos = rng.permutation(10) + 1 if shuffled else np.argsort(np.argsort(-sem)) + 1
        attract = np.array([0.05, 0.3, 0.6, 0.9])[rel]
        click = (rng.random(10) < attract * pos.astype(float) ** -eta).astype(int)
        for i in range(10):
            rows.append({"request_id": f"b{seed}-{q}", "item_id": f"i{i}", "position": int(pos[i]),
                         "strategy": "lexical", "lexical_score": lex[i], "semantic_score": sem[i],
                         "label": int(click[i]), "position_randomized": shuffled})
            truth.append(rel[i])
    return pd.DataFrame(rows), np.asarray(truth)


def test_ips_training_corrects_position_bias_that_raw_clicks_learn():
    train, _ = _biased_logs(600, seed=11)
    test, truth = _biased_logs(300, seed=12)
    params = {"n_estimators": 60, "max_depth": 3}
    raw = FAMILY.train(train, {**params, "debias": "none"})
    ips = FAMILY.train(train, {**params, "debias": "ips"})
    assert ips.meta["debias"] == "ips" and 1.0 < ips.meta["position_bias_eta"] < 2.0     # true eta 1.5
    judged = test.assign(label=truth, position=1)          # true relevance, no logged order to lean on
    ndcg_raw = ndcg_by_request(judged, raw.score(ranker_frame(judged))).mean()
    ndcg_ips = ndcg_by_request(judged, ips.score(ranker_frame(judged))).mean()
    assert ndcg_ips > ndcg_raw + 0.015
    # the raw model leans more on the feature that only tracks the served order (booster names are f<index>)
    key = f"f{list(RANKER_FEATURES).index('semantic_score')}"
    share = lambda m: m.booster.get_score(importance_type="total_gain").get(key, 0.0) / sum(
        m.booster.get_score(importance_type="total_gain").values())
    assert share(ips) < share(raw) - 0.05


def test_ips_without_shuffled_pages_falls_back_to_raw_grades():
    frame = _queries(60, seed=13)
    model = FAMILY.train(frame, {"n_estimators": 5, "debias": "ips"})
    assert model.meta["debias"] == "none" and "debias_note" in model.meta


def test_unknown_objective_or_debias_is_refused():
    with pytest.raises(ValueError, match="objective"):
        FAMILY.train(_queries(30, seed=1), {"objective": "rank:map"})
    with pytest.raises(ValueError, match="debias"):
        FAMILY.train(_queries(30, seed=1), {"debias": "magic"})


def test_paired_gate_promotes_a_clearly_better_model_and_refuses_an_equal_one(trained):
    holdout = _queries(60, seed=14)
    better, reason, numbers = FAMILY.compare(trained, _ColumnScorer("lexical_score"), holdout)
    assert better and numbers["paired_diff_lower@10"] > 0 and "beats the champion" in reason
    same, reason, numbers = FAMILY.compare(trained, trained, holdout)
    assert not same and numbers["paired_diff@10"] == 0.0 and "does not beat" in reason
    worse, _, numbers = FAMILY.compare(_ColumnScorer("lexical_score"), trained, holdout)
    assert not worse and numbers["paired_diff_upper@10"] < 0


def test_paired_bootstrap_interval_covers_the_mean():
    lo, hi, mean = paired_bootstrap(np.random.default_rng(0).normal(0.1, 0.2, 400))
    assert lo < mean < hi and lo > 0.05 and hi < 0.15


def test_conversion_feature_is_a_default_without_a_model_and_the_prediction_with_one():
    frame = pd.DataFrame({"i_purchase_rate": [0.1, 0.5]})
    assert conversion_feature(None, frame).tolist() == [CONVERSION_DEFAULT] * 2

    class Model:
        def predict(self, f):
            return f["i_purchase_rate"].to_numpy() * 2

    assert conversion_feature(Model(), frame).tolist() == [0.2, 1.0]
    X = ranker_frame(frame, {CONVERSION_FEATURE: np.array([0.3, 0.4])})
    assert X[CONVERSION_FEATURE].tolist() == [0.3, 0.4]


def test_training_set_scores_rows_with_the_conversion_model_passed_in(tmp_path):
    from datetime import UTC, datetime

    from ml.families.base import TrainContext

    _queries(3, seed=1).to_parquet(tmp_path / "label_ranker.parquet")

    class Model:
        def predict(self, f):
            return np.full(len(f), 0.25)

    ctx = TrainContext(interval_start=datetime(2024, 1, 2, tzinfo=UTC), interval_end=datetime(2024, 1, 3, tzinfo=UTC),
                       marts_dir=tmp_path, params={"conversion_model": Model()})
    assert (FAMILY.training_set(ctx)[CONVERSION_FEATURE] == 0.25).all()
    ctx = TrainContext(interval_start=ctx.interval_start, interval_end=ctx.interval_end, marts_dir=tmp_path)
    assert (FAMILY.training_set(ctx)[CONVERSION_FEATURE] == CONVERSION_DEFAULT).all()


@pytest.mark.parametrize("line, message", [
    ("x qid:1 1:0.5", "label"),
    ("-1 qid:1 1:0.5", "label"),
    ("1 1:0.5 2:0.1", "qid"),
    ("1 qid:1 1:abc", "feature token"),
    ("1 qid:1 0:0.5", "1-based"),
])
def test_read_letor_names_the_line_of_a_malformed_file(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(f"2 qid:1 1:0.1 2:0.2 # fine\n{line}\n")
    with pytest.raises(LetorFormatError, match=message) as err:
        read_letor(path)
    assert ":2:" in str(err.value)


def test_read_letor_parses_sparse_rows_and_refuses_split_queries(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("2 qid:10 1:0.5 3:1.5 # doc a\n0 qid:10 2:0.25\n1 qid:7 3:2\n")
    data = read_letor(path)
    assert data.X.shape == (3, 3) and data.X[0].tolist() == [0.5, 0.0, 1.5] and data.label.tolist() == [2, 0, 1]
    assert data.qid.tolist() == [0, 0, 1] and data.n_queries == 2
    path.write_text("1 qid:1 1:1\n0 qid:2 1:0\n1 qid:1 1:1\n")
    with pytest.raises(LetorFormatError, match="contiguous"):
        read_letor(path)


def _booster_param(booster, *path: str) -> str:
    import json

    node = json.loads(booster.save_config())
    for key in path:
        node = node[key]
    return node


def test_letor_and_nightly_share_fit_booster_but_keep_their_own_defaults(trained):
    from ml.families.ranker import LETOR_PARAMS, LetorData, letor_ndcg, train_letor

    frame = _queries(60, seed=5)
    X = ranker_frame(frame).to_numpy(dtype=np.float32)
    data = LetorData(X=X, label=frame["label"].to_numpy(), qid=pd.factorize(frame["request_id"])[0])
    booster = train_letor(data, {"n_estimators": 20, "lambdarank_num_pair_per_sample": 16, "reg_lambda": 0.5,
                                 "colsample_bynode": 0.5, "colsample_bytree": 0.75, "subsample": 0.8})
    train_param = ("learner", "gradient_booster", "tree_train_param")
    for name, value in (("colsample_bynode", 0.5), ("colsample_bytree", 0.75), ("subsample", 0.8)):
        assert float(_booster_param(booster, *train_param, name)) == pytest.approx(value)
    # LETOR: LightGBM-sized leaf-wise trees (LETOR_PARAMS, not the family's depth-3 defaults); overrides and
    # XGBoost's own ranking parameters pass through fit_booster
    assert _booster_param(booster, *train_param, "grow_policy") == "lossguide"
    assert int(_booster_param(booster, *train_param, "max_leaves")) == LETOR_PARAMS["max_leaves"] == 31
    assert float(_booster_param(booster, *train_param, "min_child_weight")) == LETOR_PARAMS["min_child_weight"]
    assert float(_booster_param(booster, *train_param, "reg_lambda")) == 0.5
    assert int(_booster_param(booster, "learner", "objective", "lambdarank_param",
                              "lambdarank_num_pair_per_sample")) == 16
    # the nightly family keeps its shallow depth-wise trees (docs/ranker.md says why)
    assert _booster_param(trained.booster, *train_param, "grow_policy") == "depthwise"
    # and the LETOR trainer still learns the known ordering
    test = _queries(30, seed=6)
    test_data = LetorData(X=ranker_frame(test).to_numpy(dtype=np.float32), label=test["label"].to_numpy(),
                          qid=pd.factorize(test["request_id"])[0])
    assert letor_ndcg(test_data, booster.inplace_predict(test_data.X))["ndcg@10"] > 0.85


def test_xgboost_lambdarank_step_is_half_lightgbms_at_the_same_learning_rate():
    """Why LETOR_PARAMS' learning rate is twice LightGBM's: for the same pair XGBoost's rank:ndcg hessian is 2x
    LightGBM's lambdarank hessian (same gradient), so its Newton step is half. One query, two documents, one stump,
    no L2: the score gap is learning_rate * 2 * |g| / h, |g| / h = 1 for XGBoost and 2 for LightGBM."""
    lgb = pytest.importorskip("lightgbm")
    from ml.families.ranker import fit_booster

    X, label = np.array([[1.0], [0.0]], dtype=np.float32), np.array([1, 0])
    stump = {"n_estimators": 1, "max_depth": 1, "min_child_weight": 0.0, "reg_lambda": 0.0}

    def xgb_gap(learning_rate: float) -> float:
        booster = fit_booster(X, label.astype(float), np.zeros(2, dtype=int), {**stump, "learning_rate": learning_rate})
        score = booster.inplace_predict(X)
        return float(score[0] - score[1])

    model = lgb.LGBMRanker(objective="lambdarank", n_estimators=1, learning_rate=0.5, num_leaves=2, reg_lambda=0.0,
                           min_child_samples=1, min_child_weight=0.0, min_data_in_bin=1, verbose=-1)
    score = model.fit(X, label, group=[2]).predict(X)
    assert xgb_gap(0.5) == pytest.approx(1.0, rel=1e-5)
    assert float(score[0] - score[1]) == pytest.approx(2.0, rel=1e-5) == xgb_gap(1.0)


def test_lightgbm_equivalent_grows_our_trees():
    """The bench's implementation-vs-configuration diagnostic: LightGBM with ``lightgbm_equivalent(params)`` scores
    like ``train_letor(params)`` (same spread, same order up to tie-breaking and binning), where LightGBM at the
    untranslated learning rate takes steps about twice as long."""
    lgb = pytest.importorskip("lightgbm")
    from ml.families.ranker import LetorData, lightgbm_equivalent, train_letor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 4)).astype(np.float32)
    label = np.clip(np.round(X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=1000) + 1), 0, 4).astype(int)
    qid = np.repeat(np.arange(40), 25)
    params = {"n_estimators": 20, "min_child_weight": 0.5}
    ours = train_letor(LetorData(X=X, label=label, qid=qid), params).inplace_predict(X)
    theirs_params = lightgbm_equivalent(params)
    assert theirs_params["min_child_samples"] == 1 and theirs_params["lambdarank_truncation_level"] == 32

    def lightgbm(p: dict) -> np.ndarray:
        return lgb.LGBMRanker(**p).fit(X, label, group=np.bincount(qid)).predict(X)

    theirs = lightgbm(theirs_params)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99
    assert np.std(theirs) / np.std(ours) == pytest.approx(1.0, abs=0.05)
    untranslated = lightgbm({**theirs_params, "learning_rate": 2 * theirs_params["learning_rate"]})
    assert np.std(untranslated) / np.std(ours) > 1.4
    with pytest.raises(ValueError, match="leaf-wise"):
        lightgbm_equivalent({"grow_policy": "depthwise", "max_depth": 5})


def test_lightgbm_equivalent_maps_subsampling_to_lightgbms_fractions():
    """Feature and row subsampling keep their fractions under LightGBM's names (bagging every round), LightGBM
    accepts them and they change its trees; unset or 1.0 adds nothing."""
    lgb = pytest.importorskip("lightgbm")
    from ml.families.ranker import lightgbm_equivalent

    plain = lightgbm_equivalent({})
    assert not {"feature_fraction_bynode", "colsample_bytree", "subsample", "subsample_freq"} & set(plain)
    assert lightgbm_equivalent({"colsample_bynode": 1.0}) == plain
    mapped = lightgbm_equivalent({"colsample_bynode": 0.5, "colsample_bytree": 0.7, "subsample": 0.8})
    assert (mapped["feature_fraction_bynode"], mapped["colsample_bytree"]) == (0.5, 0.7)
    assert (mapped["subsample"], mapped["subsample_freq"]) == (0.8, 1)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    label = np.clip(np.round(X[:, 0] + rng.normal(scale=0.5, size=600) + 1), 0, 4).astype(int)
    group = np.full(30, 20)
    small = {"n_estimators": 10, "num_leaves": 7}
    fit = lambda p: lgb.LGBMRanker(**{**p, **small}).fit(X, label, group=group).predict(X)  # noqa: E731
    assert not np.allclose(fit(mapped), fit(plain))


def test_read_sampled_requests_keeps_whole_requests_deterministically(tmp_path):
    from ml.families.ranker import read_sampled_requests

    frame = pd.DataFrame({"request_id": np.repeat([f"r{i}" for i in range(2000)], 5), "x": np.arange(10_000)})
    path = tmp_path / "label_ranker.parquet"
    frame.to_parquet(path, index=False, row_group_size=1000)
    pd.testing.assert_frame_equal(read_sampled_requests(path, 5000), frame)
    a, b = read_sampled_requests(path, 500), read_sampled_requests(path, 500)
    pd.testing.assert_frame_equal(a, b)
    assert 400 <= a["request_id"].nunique() <= 600
    assert (a.groupby("request_id").size() == 5).all()     # never a partial request
    # exactly the file's rows of the kept requests, in file order
    pd.testing.assert_frame_equal(a, frame[frame["request_id"].isin(set(a["request_id"]))].reset_index(drop=True))
    with pytest.raises(ValueError):
        read_sampled_requests(path, 0)
