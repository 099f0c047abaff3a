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
``"matured"`` (matured clicks only: unbiased but stale). With too few matured positives to learn delays,
``weighted`` falls back to ``naive`` and says so in ``model.meta["weighting"]``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import xgboost as xgb

from ml.families.base import GateSpec, NotEnoughData, TrainContext
from ml.features import ITEM_FEATURES, QUERY_ITEM_FEATURES

log = logging.getLogger(__name__)

SERVICE = "conversion_v1"
MART = "label_conversion.parquet"
KEYS: tuple[str, ...] = ("request_id", "item_id", "query_norm", "event_timestamp")
LABEL_COLUMNS: tuple[str, ...] = (
    "has_atc", "elapsed_hours", "converted_observed", "purchase_delay_hours", "matured",
)
# Numeric inputs of the conversion model, in order (the ones present in the training frame are used).
# Catalog strings (category/brand/color/material) are not used yet (see the report / known gaps).
CANDIDATE_FEATURES: tuple[str, ...] = ("has_atc", *ITEM_FEATURES, *QUERY_ITEM_FEATURES, "price")


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


def _matrix(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """The model input: stored feature order, numeric, missing (NaN / absent column) filled with 0."""
    x = frame.reindex(columns=features).apply(pd.to_numeric, errors="coerce")
    return x.fillna(0.0).to_numpy(dtype=np.float32)


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

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.zeros(0, dtype=float)
        dm = xgb.DMatrix(_matrix(frame, self.feature_names), feature_names=self.feature_names)
        return self.booster.predict(dm).astype(float)


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
    dp_features = [*features, "elapsed_hours"]

    def dp_matrix(rows: np.ndarray, e: np.ndarray) -> np.ndarray:
        return np.column_stack([_matrix(frame.iloc[rows], features), e]).astype(np.float32)

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


def _ece(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error over equal-frequency bins (low base rates leave equal-width bins empty)."""
    order = np.argsort(p, kind="stable")
    err = 0.0
    for chunk in np.array_split(order, min(n_bins, len(p))):
        if len(chunk):
            err += abs(p[chunk].mean() - y[chunk].mean()) * len(chunk)
    return float(err / len(p))


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


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
        "num_boost_round": 200,
        "max_depth": 4,
        "eta": 0.05,
        "min_child_weight": 1.0,
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
        mode = p["mode"]
        if mode not in ("weighted", "naive", "matured"):
            raise ValueError(f"unknown conversion mode {mode!r}; expected weighted, naive or matured")
        features = list(p.get("features") or [f for f in CANDIDATE_FEATURES if f in frame.columns])
        if mode == "matured":
            frame = frame.loc[frame["matured"].fillna(0).astype(int) == 1].reset_index(drop=True)
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

        dtrain = xgb.DMatrix(_matrix(frame, features), label=y, weight=w, feature_names=features)
        booster = xgb.train(_xgb_params(p), dtrain, num_boost_round=int(p["num_boost_round"]))
        base_rate = float(np.average(y, weights=w))
        meta = {"mode": mode, "attribution_window_hours": window, "base_rate": base_rate,
                "n_train": len(frame), "n_matured_train": int((frame["matured"] == 1).sum()), **info}
        return ConversionModel(booster=booster, feature_names=features, meta=meta)

    def evaluate(self, model: ConversionModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Log-loss, AUC, ECE on matured holdout rows (final labels); on observed labels if none matured
        (flagged ``eval_on_observed_labels = 1``: biased against a delay-corrected model)."""
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
        metrics = {
            "logloss": _logloss(p, y),
            "logloss_base_rate": _logloss(np.full(len(y), base), y),
            "ece": _ece(p, y),
            "mean_pred": float(p.mean()),
            "label_rate": float(y.mean()),
            "n_eval": float(len(y)),
            "eval_on_observed_labels": observed_only,
        }
        if 0 < y.sum() < len(y):
            metrics["auc"] = _auc(p, y)
        return metrics

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
        info = json.loads((path / "meta.json").read_text())
        return ConversionModel(booster=booster, feature_names=info["feature_names"], meta=info["meta"])


FAMILY = ConversionFamily()
