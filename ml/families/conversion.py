"""Conversion family: P(purchase | click) under delayed feedback, XGBoost ``binary:logistic``.

Purchases arrive days after the click. At ``interval_end`` a recent click without a purchase is not a
negative yet: it may still convert inside the attribution window. Training on the observed labels as if
they were final ("naive") underestimates the conversion rate, most for the items clicked most recently.

Importance weighting (in the spirit of FSIW, Yasui et al. 2020)
----------------------------------------------------------------
Notation: ``c`` the true conversion (a purchase within the attribution window), ``e`` the elapsed time
since the click, ``y`` the label observed by ``e`` (``y = c * 1[delay <= e]``). ``p`` is the distribution
we want to learn (final labels), ``q`` the one we observe. With ``s(x, e) = P(delay <= e | c=1, x)``:

    q(y=1 | x) = p(c=1 | x) * s(x, e)
    q(y=0 | x) = p(c=0 | x) + p(c=1 | x) * (1 - s(x, e))

so the ideal log-loss ``E_p[-c log f - (1-c) log(1-f)]`` equals ``E_q[w(x, y, e) * loss(y, f)]`` with

    w(y=1) = p(c=1 | x) / q(y=1 | x) = 1 / s(x, e)
    w(y=0) = p(c=0 | x) / q(y=0 | x) = P(c=0 | y=0, x, e) = 1 - f_dp(x, e)

where ``f_dp(x, e) = P(c=1 | y=0, x, e)`` is the probability that a current negative will still convert.
Both nuisance models are learnt from *matured* clicks only (their labels are final):

* ``s``: the empirical CDF of the purchase delay of matured positives, per ``has_atc`` (an add-to-cart is
  the pre-conversion signal that shortens delays); ``s = 1`` once ``e`` reaches the window.
* ``f_dp``: a small XGBoost classifier on *snapshots* of matured clicks at sampled elapsed times ``e``
  (features ``x``, ``has_atc``, ``e``); a snapshot exists when the click had not converted by ``e``, its
  label is "converted after ``e``" (within the window).

Then the conversion model is ``binary:logistic`` on the observed label ``y`` with weight ``w``.

Inputs. The conversion model reads only what is known when an item is *shown* (item and query-item
statistics, price): its prediction is a ranker feature (``p_conversion``), scored at serving time before any
click. Post-click signals (``has_atc``) and the elapsed time feed the nuisance models only (``f_dp``, the delay
CDF), where they say whether a current negative is still on its way to a purchase.

Calibration (``params["calibration"]``: ``"none"`` (default), ``"isotonic"`` or ``"platt"``). A post-hoc
calibrator maps the booster's score to a probability, fitted on out-of-fold scores (``calibration_folds``
boosters, each trained without one fold of the calibration rows, folds by request). ``params["calibration_rows"]``
says which rows: ``"training"`` (default: every training click with the training labels and weights, i.e. the
FSIW objective again, consistent because squared and log loss split per class like the weights) or ``"matured"``
(matured clicks, final labels: exact but stale, the oldest clicks of the window, so it pulls the model back
toward the old conversion rate the weighting corrected). Too few matured clicks: no calibrator
(``model.meta["calibration"]`` says which). Why no calibrator by default: on the benchmark's selection seeds
(10, 11; ``bench/bench_conversion.py``) the FSIW-weighted booster alone had the best holdout log-loss and an ECE
level with the oracle's and near the metric's noise floor; isotonic on matured clicks lost most of the log-loss
gain (its end plateaus reach ~0), Platt on matured clicks added ECE, and the calibrators on training rows did not
beat "none" on both seeds.

Traps (each one silently biases the model):

* The weights are *per class*: a current negative contributes only the negative term, with weight
  ``1 - f_dp``. Adding a positive term ``f_dp * (-log f)`` for it as well ("soft label") double counts the
  late conversions, which the ``1/s`` up-weighting of observed positives already stands for.
* ``s`` and ``f_dp`` are evaluated at the row's own elapsed time ``e``, not at the window; matured rows get
  ``s = 1`` and ``f_dp = 0``, i.e. weight 1: the correction only touches immature rows.
* The nuisance models must be fit on matured clicks only; immature ones are censored and would make the
  delays look short and ``f_dp`` look small.
* ``1/s`` explodes for clicks a few minutes old: ``s`` is clipped at ``min_s`` and the weight capped at
  ``max_weight`` (a little bias for a lot less variance).
* A purchase later than the window is a negative (``c`` is defined within the window), matured or not.
* ``elapsed_hours`` is a feature of ``f_dp`` only, never of the conversion model (serving has no elapsed
  time: it asks for the eventual conversion probability).

Modes (``params["mode"]``): ``"weighted"`` (default, the above), ``"naive"`` (observed labels, unweighted),
``"window"`` (the waiting-window baseline: drop clicks younger than ``waiting_window_hours``, observed labels
for the rest), ``"matured"`` (matured clicks only: unbiased but stale). With too few matured positives to learn delays,
``weighted`` falls back to ``naive`` and says so in ``model.meta["weighting"]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xgboost as xgb

from ml.families.base import GateSpec, NotEnoughData, TrainContext, float_column, n_rows, xgb_predict
from ml.features import ITEM_FEATURES, QUERY_ITEM_FEATURES

log = logging.getLogger(__name__)

SERVICE = "conversion_v1"
MART = "label_conversion.parquet"
KEYS: tuple[str, ...] = ("request_id", "item_id", "query_norm", "event_timestamp")
LABEL_COLUMNS: tuple[str, ...] = (
    "has_atc", "elapsed_hours", "converted_observed", "purchase_delay_hours", "matured",
)
# Numeric inputs of the conversion model, in order (the ones present in the training frame are used): only what
# is known before the click, so that serving can score candidates. Catalog strings are not used yet.
CANDIDATE_FEATURES: tuple[str, ...] = (*ITEM_FEATURES, *QUERY_ITEM_FEATURES, "price")
# Pre-conversion signals the delay nuisance model f_dp reads besides CANDIDATE_FEATURES and elapsed_hours.
PRE_CONVERSION_SIGNALS: tuple[str, ...] = ("has_atc",)
MODES: tuple[str, ...] = ("weighted", "naive", "window", "matured")
CALIBRATIONS: tuple[str, ...] = ("isotonic", "platt", "none")
# Rows the calibrator is fitted on: "matured" (final labels, unweighted: exact but stale) or "training" (every
# training click with the training labels and weights, i.e. the FSIW objective in weighted mode: recent, unbiased
# in expectation).
CALIBRATION_ROWS: tuple[str, ...] = ("matured", "training")


def _xgb_params(params: dict[str, Any], depth_key: str = "max_depth") -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "max_depth": int(params.get(depth_key, 4)),
        "eta": float(params.get("eta", 0.05)),
        "min_child_weight": float(params.get("min_child_weight", 1.0)),
        "subsample": float(params.get("subsample", 1.0)),
        "lambda": float(params.get("lambda", 1.0)),
        "nthread": int(params.get("nthread", 1)),
        "seed": int(params.get("seed", 0)),
    }


def _matrix(frame: pd.DataFrame | Mapping[str, Any], features: list[str]) -> np.ndarray:
    """The model input: stored feature order, numeric, missing (NaN / absent column) filled with 0.

    Column by column (``frame`` may be plain columns: the scorer calls this on every request, the prediction is
    a ranker feature, where a frame-wide reindex + apply costs a millisecond).
    """
    out = np.zeros((n_rows(frame), len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        if name in frame:
            out[:, j] = float_column(frame[name])
    out[np.isnan(out)] = 0.0     # one pass over the matrix, not a nan_to_num call (~10 us) per column
    return out


def final_label(frame: pd.DataFrame, window_hours: float) -> np.ndarray:
    """``c``: converted within the attribution window (a later purchase is a negative)."""
    conv = frame["converted_observed"].fillna(0).astype(int).to_numpy() == 1
    if "purchase_delay_hours" not in frame.columns:
        return conv.astype(int)
    delay = pd.to_numeric(frame["purchase_delay_hours"], errors="coerce").to_numpy(dtype=float)
    in_window = np.isnan(delay) | (delay <= window_hours)
    return (conv & in_window).astype(int)


@dataclass
class DelayModel:
    """Empirical CDF ``s(e | has_atc) = P(delay <= e | converted, has_atc)`` from matured positives."""

    window_hours: float
    delays: dict[int, np.ndarray]          # has_atc -> sorted delays (hours); key -1 = all
    min_group: int = 20

    @classmethod
    def fit(cls, delays: np.ndarray, has_atc: np.ndarray, window_hours: float) -> DelayModel:
        groups = {-1: np.sort(delays)}
        for g in (0, 1):
            groups[g] = np.sort(delays[has_atc == g])
        return cls(window_hours=window_hours, delays=groups)

    def s(self, elapsed: np.ndarray, has_atc: np.ndarray) -> np.ndarray:
        out = np.ones(len(elapsed), dtype=float)
        for g in (0, 1):
            d = self.delays[g] if len(self.delays[g]) >= self.min_group else self.delays[-1]
            m = has_atc == g
            if m.any():
                out[m] = np.searchsorted(d, elapsed[m], side="right") / max(len(d), 1)
        out[elapsed >= self.window_hours] = 1.0
        return out


@dataclass
class ConversionModel:
    """What serving loads: ``predict(frame) -> P(purchase | click)`` from the stored feature list."""

    booster: xgb.Booster
    feature_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def raw_predict(self, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        """The booster's probability, before the calibrator (``frame``: a DataFrame or plain columns)."""
        if n_rows(frame) == 0:
            return np.zeros(0, dtype=float)
        # no DMatrix per call (the scorer calls this on every request's candidates)
        return np.asarray(xgb_predict(self.booster, _matrix(frame, self.feature_names)), dtype=float)

    def predict(self, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
        return apply_calibration(self.meta.get("calibrator"), self.raw_predict(frame))

    def __repr__(self) -> str:   # what MLflow params / decision records show when a model is passed as a param
        return (f"ConversionModel(mode={self.meta.get('mode')}, weighting={self.meta.get('weighting')}, "
                f"calibration={self.meta.get('calibration')}, features={len(self.feature_names)})")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: str,
                   weight: np.ndarray | None = None) -> dict[str, Any] | None:
    """A JSON-able calibrator from scores ``p`` to labels ``y`` (optionally weighted): isotonic (scikit-learn's
    ``IsotonicRegression``, stored as its knots) or Platt (scikit-learn's ``LogisticRegression`` on the logit)."""
    if method == "none":
        return None
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip").fit(p, y, sample_weight=weight)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e4).fit(_logit(p).reshape(-1, 1), y, sample_weight=weight)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    raise ValueError(f"unknown calibration {method!r}; expected one of {', '.join(CALIBRATIONS)}")


def apply_calibration(calibrator: dict[str, Any] | None, p: np.ndarray) -> np.ndarray:
    if not calibrator or len(p) == 0:
        return p
    if calibrator["method"] == "isotonic":
        return np.interp(p, calibrator["x"], calibrator["y"])
    return 1.0 / (1.0 + np.exp(-(calibrator["a"] * _logit(p) + calibrator["b"])))


def importance_weights(frame: pd.DataFrame, features: list[str], params: dict[str, Any],
                       rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """FSIW weights for every row (1 for matured rows); see the module docstring for the derivation."""
    window = float(params["attribution_window_hours"])
    y = frame["converted_observed"].fillna(0).astype(int).to_numpy()
    elapsed = pd.to_numeric(frame["elapsed_hours"], errors="coerce").fillna(window).to_numpy(dtype=float)
    atc = frame.get("has_atc", pd.Series(0, index=frame.index)).fillna(0).astype(int).to_numpy()
    matured = (frame["matured"].fillna(0).astype(int).to_numpy() == 1) | (elapsed >= window)
    c = final_label(frame, window)
    delay = pd.to_numeric(frame["purchase_delay_hours"], errors="coerce").to_numpy(dtype=float)

    pos = matured & (c == 1) & ~np.isnan(delay)
    if pos.sum() < int(params.get("min_matured_positives", 20)):
        return np.ones(len(frame)), {"weighting": "fallback_naive", "n_matured_positives": int(pos.sum())}
    delays = DelayModel.fit(delay[pos], atc[pos], window)

    # f_dp: snapshots of matured clicks at sampled elapsed times, kept while not yet converted.
    k = int(params.get("n_snapshots", 3))
    mat_idx = np.flatnonzero(matured)
    idx = np.repeat(mat_idx, k)
    e_snap = rng.uniform(0.0, window, size=len(idx))
    d_snap = np.nan_to_num(delay[idx], nan=np.inf)
    alive = ~((c[idx] == 1) & (d_snap <= e_snap))          # not converted by e: a "current negative"
    idx, e_snap, d_snap = idx[alive], e_snap[alive], d_snap[alive]
    late = ((c[idx] == 1) & (d_snap > e_snap)).astype(float)
    dp_features = [*features, *(f for f in PRE_CONVERSION_SIGNALS if f not in features), "elapsed_hours"]

    def dp_matrix(rows: np.ndarray, e: np.ndarray) -> np.ndarray:
        return np.column_stack([_matrix(frame.iloc[rows], dp_features[:-1]), e]).astype(np.float32)

    immature_neg = ~matured & (y == 0)
    f_dp = np.zeros(len(frame))
    if late.sum() > 0 and immature_neg.any():
        dp = xgb.train(_xgb_params({**params, "eta": 0.1}, "dp_max_depth"),
                       xgb.DMatrix(dp_matrix(idx, e_snap), label=late, feature_names=dp_features),
                       num_boost_round=int(params.get("dp_rounds", 80)))
        rows = np.flatnonzero(immature_neg)
        f_dp[rows] = dp.predict(xgb.DMatrix(dp_matrix(rows, elapsed[rows]), feature_names=dp_features))

    s = np.clip(delays.s(elapsed, atc), float(params.get("min_s", 0.05)), 1.0)
    w = np.ones(len(frame))
    w[~matured & (y == 1)] = 1.0 / s[~matured & (y == 1)]
    w[immature_neg] = 1.0 - f_dp[immature_neg]
    w = np.clip(w, 0.0, float(params.get("max_weight", 20.0)))
    info = {
        "weighting": "fsiw",
        "n_matured_positives": int(pos.sum()),
        "n_snapshots": len(idx),
        "mean_f_dp_immature_neg": float(f_dp[immature_neg].mean()) if immature_neg.any() else 0.0,
        "median_delay_hours": float(np.median(delay[pos])),
    }
    return w, info


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean prediction, observed rate, count) per equal-frequency bin of ``p``: the reliability diagram's points.

    Equal-frequency bins because conversion rates are low: equal-width bins would leave most of them empty.
    """
    order = np.argsort(p, kind="stable")
    return [(float(p[c].mean()), float(y[c].mean()), len(c))
            for c in np.array_split(order, min(n_bins, len(p))) if len(c)]


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over equal-frequency bins (see ``reliability_bins``)."""
    bins = reliability_bins(p, y, n_bins)
    return float(sum(abs(mp - rate) * n for mp, rate, n in bins) / max(len(p), 1))


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _pr_auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def classification_metrics(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """log-loss, AUC, PR-AUC (average precision), ECE and the reliability bins (``rel_pred_i``, ``rel_rate_i``)."""
    out = {"logloss": _logloss(p, y), "ece": expected_calibration_error(p, y, n_bins),
           "mean_pred": float(p.mean()), "label_rate": float(y.mean()), "n_eval": float(len(y))}
    if 0 < y.sum() < len(y):
        out["auc"], out["pr_auc"] = _auc(p, y), _pr_auc(p, y)
    for i, (mp, rate, _n) in enumerate(reliability_bins(p, y, n_bins)):
        out[f"rel_pred_{i}"], out[f"rel_rate_{i}"] = mp, rate
    return out


class ConversionFamily:
    name = "conversion"
    registered_model = "ltrr-conversion"
    # Log-loss of a coin flip is ln 2 = 0.693: the floor only refuses a broken model. The real bar is the
    # champion on the same holdout (min_delta 0: any improvement promotes); `logloss_base_rate` in the
    # metrics is the stricter reference (predicting the training conversion rate everywhere).
    gate_spec = GateSpec(metric="logloss", direction="min", floor=0.69, min_delta=0.0)
    default_params: ClassVar[dict[str, Any]] = {
        "mode": "weighted",
        "attribution_window_hours": 168.0,
        "waiting_window_hours": 24.0,
        # "none" and "training": chosen on the benchmark's selection seeds (module docstring, docs/ranker.md)
        "calibration": "none",
        "calibration_folds": 3,
        "calibration_rows": "training",
        "min_calibration_rows": 300,
        "min_calibration_positives": 20,
        # Chosen by grouped 3-fold CV log-loss on matured clicks of the benchmark's training window (never its
        # holdout): purchase given click is weakly predictable from pre-click features (AUC ~0.55), so strong
        # regularisation wins; the former 200 rounds x depth 4 x min_child_weight 1 ranked 26th of 27.
        "num_boost_round": 50,
        "max_depth": 3,
        "eta": 0.05,
        "min_child_weight": 50.0,
        "n_snapshots": 3,
        "dp_max_depth": 3,
        "dp_rounds": 80,
        "min_s": 0.05,
        "max_weight": 20.0,
        "min_matured_positives": 20,
        "min_rows": 50,
        "holdout_share": 0.2,
        "nthread": 1,
        "seed": 0,
    }

    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """One row per click from the label mart, plus ``conversion_v1`` features as of the click."""
        frame = pd.read_parquet(Path(ctx.marts_dir) / MART)
        entity_df = frame[[*KEYS, *LABEL_COLUMNS]].copy()
        entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
        if ctx.feast_repo is None:
            return entity_df
        from ml.feature_store import historical_features

        return historical_features(ctx.feast_repo, getattr(ctx, "feast_env", None) or {}, entity_df, SERVICE)

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Hash split by request, not by time: the interval being closed has no matured label yet, so a
        time holdout could only be judged on observed (biased) labels. The holdout's matured rows judge."""
        share = float(ctx.params.get("holdout_share", self.default_params["holdout_share"]))
        h = pd.util.hash_pandas_object(frame["request_id"].astype(str), index=False).to_numpy()
        hold = (h % 1000) < share * 1000
        return frame.loc[~hold].reset_index(drop=True), frame.loc[hold].reset_index(drop=True)

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> ConversionModel:
        p = {**self.default_params, **(params or {})}
        window = float(p["attribution_window_hours"])
        mode, calibration = p["mode"], str(p["calibration"])
        if mode not in MODES:
            raise ValueError(f"unknown conversion mode {mode!r}; expected one of {', '.join(MODES)}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {calibration!r}; expected one of {', '.join(CALIBRATIONS)}")
        if p["calibration_rows"] not in CALIBRATION_ROWS:
            raise ValueError(f"unknown calibration_rows {p['calibration_rows']!r}; "
                             f"expected one of {', '.join(CALIBRATION_ROWS)}")
        features = list(p.get("features") or [f for f in CANDIDATE_FEATURES if f in frame.columns])
        if mode == "matured":
            frame = frame.loc[frame["matured"].fillna(0).astype(int) == 1].reset_index(drop=True)
        elif mode == "window":
            # Waiting window: a click younger than the window is dropped; older ones keep their observed label
            # (still biased for conversions later than the window, but much less than naive).
            elapsed = pd.to_numeric(frame["elapsed_hours"], errors="coerce").fillna(window)
            frame = frame.loc[elapsed >= float(p["waiting_window_hours"])].reset_index(drop=True)
        if len(frame) < int(p["min_rows"]) or not features:
            raise NotEnoughData(f"conversion: {len(frame)} clicks, features {features}")

        if mode == "matured":
            y = final_label(frame, window)
        else:
            # Observed label at interval_end; for matured rows it is final (purchases after the window
            # are negatives). For immature rows any observed purchase is necessarily within the window.
            y = np.where(frame["matured"].fillna(0).astype(int) == 1, final_label(frame, window),
                         frame["converted_observed"].fillna(0).astype(int))
        if y.sum() == 0 or y.sum() == len(y):
            raise NotEnoughData("conversion: the training labels have a single class")

        info: dict[str, Any] = {"weighting": "none"}
        w = np.ones(len(frame))
        if mode == "weighted":
            w, info = importance_weights(frame, features, p, np.random.default_rng(int(p["seed"])))
            if info["weighting"] == "fallback_naive":
                log.warning("conversion: %d matured positives, too few to learn delays; training naive",
                            info["n_matured_positives"])

        X = _matrix(frame, features)
        xgb_params, rounds = _xgb_params(p), int(p["num_boost_round"])

        def fit(rows: np.ndarray) -> xgb.Booster:
            return xgb.train(xgb_params, xgb.DMatrix(X[rows], label=y[rows], weight=w[rows], feature_names=features),
                             num_boost_round=rounds)

        booster = fit(np.arange(len(frame)))
        calibrator, cal_info = None, {"calibration": "none"}
        if calibration != "none":
            calibrator, cal_info = self._calibrate(frame, X, y, w, fit, p, calibration)
        base_rate = float(np.average(y, weights=w))
        meta = {"mode": mode, "attribution_window_hours": window, "base_rate": base_rate,
                "n_train": len(frame), "n_matured_train": int((frame["matured"] == 1).sum()), **info, **cal_info,
                "calibrator": calibrator}
        if mode == "window":
            meta["waiting_window_hours"] = float(p["waiting_window_hours"])
        return ConversionModel(booster=booster, feature_names=features, meta=meta)

    @staticmethod
    def _calibrate(frame: pd.DataFrame, X: np.ndarray, y: np.ndarray, w: np.ndarray, fit, p: dict[str, Any],
                   method: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Calibrator fitted on out-of-fold scores of ``p["calibration_rows"]``: the matured training clicks
        (final labels) or every training click (training labels and weights)."""
        window = float(p["attribution_window_hours"])
        source = str(p["calibration_rows"])
        is_matured = frame["matured"].fillna(0).astype(int).to_numpy() == 1
        y_final = final_label(frame, window)
        n_mat, n_pos = int(is_matured.sum()), int(y_final[is_matured].sum())
        if n_mat < int(p["min_calibration_rows"]) or n_pos < int(p["min_calibration_positives"]):
            return None, {"calibration": "none", "calibration_note":
                          f"{n_mat} matured clicks ({n_pos} converted): too few to calibrate"}
        rows = np.flatnonzero(is_matured) if source == "matured" else np.arange(len(frame))
        labels, weights = (y_final, None) if source == "matured" else (y, w)
        k = int(p["calibration_folds"])
        # Folds by request (hash), so a request's clicks never straddle a booster and its out-of-fold score.
        h = pd.util.hash_pandas_object(frame["request_id"].iloc[rows].astype(str), index=False).to_numpy()
        fold = h % k
        oof = np.zeros(len(rows))
        everything = np.arange(len(frame))
        for f in range(k):
            held = rows[fold == f]
            booster = fit(np.setdiff1d(everything, held, assume_unique=True))
            oof[fold == f] = booster.inplace_predict(X[held])
        cal = fit_calibrator(oof, labels[rows], method, None if weights is None else weights[rows])
        # Judged on the matured rows' final labels either way (the only exact labels at training time).
        judged, y_judged = is_matured[rows], y_final[rows][is_matured[rows]]
        return cal, {"calibration": method, "calibration_rows": source, "n_calibration": len(rows),
                     "calibration_ece_before": expected_calibration_error(oof[judged], y_judged),
                     "calibration_ece_after": expected_calibration_error(apply_calibration(cal, oof[judged]),
                                                                         y_judged)}

    def evaluate(self, model: ConversionModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Log-loss, AUC, PR-AUC, ECE and reliability bins on matured holdout rows (final labels); on observed
        labels if none matured (flagged ``eval_on_observed_labels = 1``: biased against a delay-corrected model)."""
        if len(holdout) == 0:
            raise NotEnoughData("conversion: empty holdout")
        window = float(model.meta.get("attribution_window_hours", self.default_params["attribution_window_hours"]))
        matured = holdout["matured"].fillna(0).astype(int) == 1
        if matured.any():
            rows, observed_only = holdout.loc[matured], 0.0
            y = final_label(rows, window)
        else:
            rows, observed_only = holdout, 1.0
            y = rows["converted_observed"].fillna(0).astype(int).to_numpy()
        p = model.predict(rows)
        base = float(np.clip(model.meta.get("base_rate", y.mean()), 1e-6, 1 - 1e-6))
        return {**classification_metrics(p, y), "logloss_base_rate": _logloss(np.full(len(y), base), y),
                "eval_on_observed_labels": observed_only}

    def save(self, model: ConversionModel, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.booster.save_model(path / "model.json")
        (path / "meta.json").write_text(json.dumps(
            {"feature_names": model.feature_names, "meta": model.meta}, indent=2, sort_keys=True))

    def load(self, path: Path) -> ConversionModel:
        path = Path(path)
        booster = xgb.Booster()
        booster.load_model(path / "model.json")
        booster.set_param({"nthread": 1})   # the scorer predicts per request (ranker feature): one thread
        info = json.loads((path / "meta.json").read_text())
        return ConversionModel(booster=booster, feature_names=info["feature_names"], meta=info["meta"])


FAMILY = ConversionFamily()
