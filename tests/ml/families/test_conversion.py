"""Conversion family: the delay-corrected model recovers the true conversion rate that the naive one misses."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ml.families.base import NotEnoughData, TrainContext
from ml.families.conversion import FAMILY, final_label

WINDOW = 168.0
CUTOFF = pd.Timestamp("2024-03-01", tz="UTC")


def simulate(n: int, seed: int, span_hours: float, mean_delay: float = 48.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Clicks spread over ``span_hours`` before the cutoff; returns the mart-like frame and the true labels."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, n)
    atc = rng.binomial(1, 0.3, n)
    p = 1.0 / (1.0 + np.exp(-(-2.5 + 2.5 * x + 2.0 * atc)))
    converts = rng.binomial(1, p) == 1
    delay = rng.exponential(mean_delay, n)
    elapsed = rng.uniform(0.0, span_hours, n)
    truth = (converts & (delay <= WINDOW)).astype(int)
    observed = converts & (delay <= elapsed)
    frame = pd.DataFrame({
        "request_id": [f"r{seed}-{i}" for i in range(n)],
        "item_id": [f"i{i % 50}" for i in range(n)],
        "query_norm": "shoe",
        "event_timestamp": CUTOFF - pd.to_timedelta(elapsed, unit="h"),
        "has_atc": atc,
        "elapsed_hours": elapsed,
        "converted_observed": observed.astype(int),
        "purchase_delay_hours": np.where(observed, delay, np.nan),
        "matured": (elapsed >= WINDOW).astype(int),
        "i_purchase_rate": x,
        "price": rng.uniform(5, 100, n),          # noise feature
    })
    return frame, truth


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@pytest.fixture(scope="module")
def models():
    train, _ = simulate(4000, seed=1, span_hours=240.0)      # 70% of the clicks are still immature
    params = {"num_boost_round": 80, "max_depth": 3, "eta": 0.1, "calibration": "none"}   # the weighting alone
    naive = FAMILY.train(train, {**params, "mode": "naive"})
    weighted = FAMILY.train(train, {**params, "mode": "weighted"})
    return train, naive, weighted


def test_weighted_beats_naive_against_true_labels(models):
    _train, naive, weighted = models
    test, truth = simulate(4000, seed=2, span_hours=1.0)
    true_rate = truth.mean()
    p_naive, p_weighted = naive.predict(test), weighted.predict(test)
    assert weighted.meta["weighting"] == "fsiw"
    # The naive model reads not-yet-converted clicks as negatives: it underestimates.
    assert p_naive.mean() < true_rate - 0.02
    assert abs(p_weighted.mean() - true_rate) < 0.5 * abs(p_naive.mean() - true_rate)
    assert _logloss(p_weighted, truth) < _logloss(p_naive, truth)


def test_evaluate_judges_on_matured_labels(models):
    _train, naive, weighted = models
    holdout, truth = simulate(1500, seed=3, span_hours=400.0)
    m_naive, m_weighted = FAMILY.evaluate(naive, holdout), FAMILY.evaluate(weighted, holdout)
    mat = holdout["matured"] == 1
    assert m_weighted["eval_on_observed_labels"] == 0.0
    assert m_weighted["n_eval"] == mat.sum()
    assert m_weighted["label_rate"] == pytest.approx(truth[mat.to_numpy()].mean())
    assert m_weighted["logloss"] < FAMILY.gate_spec.floor
    assert m_weighted["logloss"] < m_weighted["logloss_base_rate"]
    assert m_weighted["auc"] > 0.6          # x only: has_atc is a post-click signal, not a model input
    assert m_weighted["ece"] < m_naive["ece"]


def test_evaluate_flags_observed_labels_when_nothing_matured(models):
    _, _, weighted = models
    fresh, _ = simulate(300, seed=4, span_hours=48.0)
    metrics = FAMILY.evaluate(weighted, fresh)
    assert metrics["eval_on_observed_labels"] == 1.0
    assert metrics["n_eval"] == 300


def test_purchase_after_window_is_a_negative():
    frame = pd.DataFrame({"converted_observed": [1, 1, 0], "purchase_delay_hours": [10.0, 200.0, np.nan]})
    assert final_label(frame, WINDOW).tolist() == [1, 0, 0]


def test_predict_fills_missing_features_and_roundtrips(models, tmp_path):
    _, _, weighted = models
    frame = pd.DataFrame({"has_atc": [1, 0], "i_purchase_rate": [0.9, np.nan]})   # price absent
    before = weighted.predict(frame)
    assert before.shape == (2,) and np.all((before > 0) & (before < 1))
    FAMILY.save(weighted, tmp_path / "m")
    assert (tmp_path / "m" / "model.json").exists()
    loaded = FAMILY.load(tmp_path / "m")
    assert loaded.feature_names == weighted.feature_names
    assert loaded.meta["mode"] == "weighted"
    np.testing.assert_allclose(loaded.predict(frame), before, rtol=1e-6)


def test_too_few_matured_positives_falls_back_to_naive():
    train, _ = simulate(400, seed=5, span_hours=170.0)       # almost nothing matured
    model = FAMILY.train(train, {"num_boost_round": 10, "min_matured_positives": 50})
    assert model.meta["weighting"] == "fallback_naive"


def test_split_is_by_request_and_keeps_matured_rows():
    frame, _ = simulate(1000, seed=6, span_hours=400.0)
    ctx = TrainContext(interval_start=datetime(2024, 2, 29, tzinfo=UTC),
                       interval_end=datetime(2024, 3, 1, tzinfo=UTC), marts_dir=".")
    train, holdout = FAMILY.split(frame, ctx)
    assert len(train) + len(holdout) == 1000
    assert not set(train["request_id"]) & set(holdout["request_id"])
    assert 0.1 < len(holdout) / 1000 < 0.3 and holdout["matured"].sum() > 0


def test_training_set_reads_the_mart_without_feast(tmp_path):
    frame, _ = simulate(100, seed=7, span_hours=400.0)
    frame.drop(columns=["i_purchase_rate", "price"]).to_parquet(tmp_path / "label_conversion.parquet")
    ctx = TrainContext(interval_start=datetime(2024, 2, 29, tzinfo=UTC),
                       interval_end=datetime(2024, 3, 1, tzinfo=UTC), marts_dir=tmp_path)
    out = FAMILY.training_set(ctx)
    assert len(out) == 100 and {"request_id", "item_id", "elapsed_hours", "matured"} <= set(out.columns)


def test_single_class_is_not_enough_data():
    frame, _ = simulate(200, seed=8, span_hours=400.0)
    frame["converted_observed"] = 0
    with pytest.raises(NotEnoughData):
        FAMILY.train(frame, {"num_boost_round": 5})


def test_waiting_window_drops_clicks_younger_than_the_window():
    frame, _ = simulate(2000, seed=9, span_hours=240.0)
    model = FAMILY.train(frame, {"mode": "window", "waiting_window_hours": 48.0, "num_boost_round": 5,
                                 "calibration": "none"})
    assert model.meta["n_train"] == int((frame["elapsed_hours"] >= 48.0).sum())
    assert model.meta["waiting_window_hours"] == 48.0


def test_calibrator_is_fitted_on_matured_clicks_and_moves_naive_predictions_toward_the_truth():
    train, _ = simulate(4000, seed=1, span_hours=240.0)
    test, truth = simulate(4000, seed=2, span_hours=1.0)
    params = {"num_boost_round": 80, "max_depth": 3, "eta": 0.1, "mode": "naive", "calibration_rows": "matured"}
    raw = FAMILY.train(train, {**params, "calibration": "none"})
    iso = FAMILY.train(train, {**params, "calibration": "isotonic"})
    assert iso.meta["calibration"] == "isotonic" and iso.meta["n_calibration"] == int(train["matured"].sum())
    assert iso.meta["calibration_ece_after"] < iso.meta["calibration_ece_before"]
    # naive reads pending conversions as negatives; a calibrator fitted on final labels undoes part of that
    assert abs(iso.predict(test).mean() - truth.mean()) < 0.5 * abs(raw.predict(test).mean() - truth.mean())


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrator_on_training_rows_keeps_the_weighted_model_unbiased(method):
    train, _ = simulate(4000, seed=1, span_hours=240.0)      # 70% of the clicks are still immature
    test, truth = simulate(4000, seed=2, span_hours=1.0)
    params = {"num_boost_round": 80, "max_depth": 3, "eta": 0.1, "calibration": method,
              "calibration_rows": "training"}
    weighted = FAMILY.train(train, {**params, "mode": "weighted"})
    naive = FAMILY.train(train, {**params, "mode": "naive"})
    assert weighted.meta["calibration_rows"] == "training" and weighted.meta["n_calibration"] == len(train)
    # fitted with the FSIW weights, the calibrator keeps the correction; on naive labels it keeps the bias
    assert abs(weighted.predict(test).mean() - truth.mean()) < 0.02
    assert naive.predict(test).mean() < truth.mean() - 0.05


def test_unknown_calibration_rows_is_refused():
    train, _ = simulate(2000, seed=1, span_hours=240.0)
    with pytest.raises(ValueError, match="calibration_rows"):
        FAMILY.train(train, {"num_boost_round": 5, "calibration_rows": "holdout"})


def test_no_calibrator_without_enough_matured_clicks():
    train, _ = simulate(600, seed=5, span_hours=175.0)
    model = FAMILY.train(train, {"num_boost_round": 5, "min_matured_positives": 1, "calibration": "isotonic"})
    assert model.meta["calibration"] == "none" and "too few" in model.meta["calibration_note"]


def test_evaluate_reports_pr_auc_and_reliability_bins(models):
    _, _, weighted = models
    holdout, _ = simulate(1500, seed=3, span_hours=400.0)
    m = FAMILY.evaluate(weighted, holdout)
    assert 0 < m["pr_auc"] < 1
    preds = [m[f"rel_pred_{i}"] for i in range(10)]
    assert preds == sorted(preds) and all(0 <= m[f"rel_rate_{i}"] <= 1 for i in range(10))
