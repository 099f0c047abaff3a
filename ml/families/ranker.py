"""Ranker family: XGBoost learning-to-rank (LambdaMART) over the candidates the strategies retrieve.

One row per impression; a request is a query group. ``ranker_frame`` is the one function that turns candidates
(retrieval scores + strategy + Feast features + ``attr_match`` + ``p_conversion``) into the model's input, for
training and serving alike. ``attr_match`` comes from ``ml.retrieval.structured.attr_match`` on the catalog plus the
filled attributes (``item_attributes.parquet``, see ``ml.backfill``); ``p_conversion`` is the conversion champion's
P(purchase | click) (``conversion_feature``), in ``training_set`` here and in the scorer.

Position bias (see docs/ranker.md). Clicks depend on where an item was shown. The scorer shuffles a share of pages
(``position_randomized``); on those the click rate by position traces the examination curve
``P(examine p) ~ p^-eta`` (``position_bias_eta``). Training multiplies each impression's gain ``2^label - 1`` by
its inverse examination propensity ``p^eta`` (capped) and trains LambdaMART on those gains
(``ndcg_exp_gain=False``: the label *is* the gain), so the NDCG that LambdaMART optimises is the IPS estimate of
the NDCG on true relevance (Joachims et al. 2017 for IPS in LTR). XGBoost's own ``lambdarank_unbiased`` (Unbiased
LambdaMART, which learns the position bias jointly) is available as ``debias="unbiased"`` and was measured
against it (bench/bench_ranker.py).

Gate: challenger and champion are scored on the same holdout requests with the same IPS weights; the challenger
is promoted only when the lower bound of the paired-bootstrap interval of the NDCG@10 difference is above 0
(``compare``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.events.schema import STRATEGIES
from ml.families.base import (
    GateSpec,
    NotEnoughData,
    TrainContext,
    bootstrap_se,
    float_column,
    n_rows,
    read_mart,
    time_split,
    xgb_predict,
)
from ml.features import CONVERSION_FEATURE, DEFAULTS, RANKER_FEATURES

NDCG_K = 10
GATE_METRIC = f"ndcg@{NDCG_K}"
MODEL_FILE = "model.json"          # XGBoost's own JSON format
META_FILE = "meta.json"
# Without a conversion model the feature is this constant, in training and serving alike.
CONVERSION_DEFAULT = 0.0
OBJECTIVES = ("rank:ndcg", "rank:pairwise")
# XGBoost parameters ``fit_booster`` hands over unchanged when a caller sets them (else XGBoost's defaults).
PASSTHROUGH_PARAMS = ("lambdarank_pair_method", "lambdarank_num_pair_per_sample", "lambdarank_normalization",
                      "lambdarank_score_normalization", "reg_lambda", "reg_alpha", "gamma", "colsample_bytree",
                      "colsample_bynode", "max_bin")
# Every key ``fit_booster`` reads: the explicit ones, then the passthrough ones.
BOOSTER_PARAMS = ("objective", "n_estimators", "max_depth", "max_leaves", "grow_policy", "learning_rate",
                  "min_child_weight", "subsample", "nthread", "seed", "lambdarank_unbiased", *PASSTHROUGH_PARAMS)
DEBIAS_MODES = ("ips", "unbiased", "none")


def numeric_column(frame: pd.DataFrame | Mapping[str, Any], name: str, default: float) -> np.ndarray:
    """``frame[name]`` as float64 with missing values (absent column, NaN, unparsable) replaced by ``default``.

    ``frame`` is a DataFrame or plain columns (name -> equal-length arrays or lists; the scorer's hot path).
    """
    if name not in frame:
        return np.full(n_rows(frame), default)
    values = float_column(frame[name])
    return np.where(np.isnan(values), default, values)


_RANKER_DEFAULTS = np.array([float(DEFAULTS.get(n, 0.0)) for n in RANKER_FEATURES])


def ranker_matrix(candidates: pd.DataFrame | Mapping[str, Any],
                  overrides: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The model input as a float64 matrix: columns ``RANKER_FEATURES`` in order, no NaN.

    ``from_<strategy>`` is the one-hot of the ``strategy`` column (which strategy retrieved the item); every other
    feature comes from the column of the same name, missing columns and values filled from ``DEFAULTS`` (else 0),
    exactly as the scorer fills a feature the online store does not have (new query, new item). ``overrides``
    gives a feature's values directly (the scorer's ``p_conversion``) without adding a column to ``candidates``.
    ``candidates`` is a DataFrame (training) or plain columns (the scorer: no frame on its hot path).
    """
    overrides = overrides or {}
    n = n_rows(candidates)
    if "strategy" not in candidates:
        strategy = np.full(n, "")
    elif isinstance(candidates["strategy"], pd.Series):
        strategy = candidates["strategy"].astype(str).to_numpy()
    else:
        strategy = np.asarray(candidates["strategy"], dtype=object).astype(str)
    out = np.empty((n, len(RANKER_FEATURES)), dtype=np.float64)
    filled = np.zeros(len(RANKER_FEATURES), dtype=bool)     # columns whose NaN mean "missing": default them
    for j, name in enumerate(RANKER_FEATURES):
        if name in overrides:
            out[:, j] = overrides[name]
        elif name.startswith("from_") and name[len("from_"):] in STRATEGIES:
            out[:, j] = strategy == name[len("from_"):]
        elif name in candidates:
            out[:, j] = float_column(candidates[name])
            filled[j] = True
        else:
            out[:, j] = _RANKER_DEFAULTS[j]
    # numeric_column's rule (NaN -> the feature's default) in one pass over the matrix, not a where per column
    nan = np.isnan(out) & filled
    if nan.any():
        out[nan] = np.broadcast_to(_RANKER_DEFAULTS, out.shape)[nan]
    return out


def ranker_frame(candidates: pd.DataFrame, overrides: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """``ranker_matrix`` as a frame (columns ``RANKER_FEATURES``, ``candidates``' index): training's model input."""
    return pd.DataFrame(ranker_matrix(candidates, overrides), index=candidates.index, columns=list(RANKER_FEATURES))


def read_sampled_requests(path: Path, max_requests: int) -> pd.DataFrame:
    """The rows of at most ``max_requests`` whole requests of the Parquet file ``path``, chosen by a hash of
    ``request_id`` (all rows, in file order, when it holds no more requests).

    Deterministic (a rerun of the interval trains on the same rows) and uniform over days, so the holdout
    (the interval being closed) keeps its share. The dropped requests are never loaded: the request ids are read
    first (as a dictionary: one string per request), the hash picks the kept ones, and only their rows are read
    (a filter in the Parquet scan); at 3M events a day the whole file was ~1 GB of the task's memory.
    """
    import pyarrow.parquet as pq

    if max_requests <= 0:
        raise ValueError(f"max_requests must be positive, got {max_requests}")
    ids = pq.read_table(path, columns=["request_id"], read_dictionary=["request_id"]).column("request_id")
    unique = pd.Series(ids.unique().to_pandas(), dtype=object).astype(str)
    del ids
    if len(unique) <= max_requests:
        return read_mart(path)
    h = pd.util.hash_pandas_object(unique, index=False).to_numpy() % np.uint64(1_000_000)
    kept = unique[h < np.uint64(int(1_000_000 * max_requests / len(unique)))].tolist()
    return read_mart(path, filters=[("request_id", "in", kept)])


def with_attr_match(frame: pd.DataFrame, marts_dir: Path) -> pd.DataFrame:
    """``frame`` (query_norm, item_id, ...) with the ``attr_match`` column, from ``dim_items`` plus the filled
    attributes of ``item_attributes.parquet`` when present (0 everywhere without ``dim_items``).

    The catalog is today's, not the one at impression time: attributes are static item facts, and a value
    filled later was true all along.
    """
    from ml.backfill import filled_attributes, read_item_attributes
    from ml.retrieval.base import build_index
    from ml.retrieval.structured import QueryParser, attr_match

    out = frame.copy()
    items_path = Path(marts_dir) / "dim_items.parquet"
    if not items_path.exists() or not {"query_norm", "item_id"} <= set(out.columns):
        out["attr_match"] = 0.0
        return out
    index = build_index(pd.read_parquet(items_path), None, filled_attributes(read_item_attributes(marts_dir)))
    out["attr_match"] = attr_match(QueryParser(index), index, out["query_norm"].astype(str).tolist(),
                                   out["item_id"].astype(str).tolist())
    return out


def conversion_feature(conversion_model: Any | None, frame: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """``p_conversion`` per candidate row: the conversion model's P(purchase | click), for training and serving.

    The one function both paths call (``training_set`` here, ``serving.scorer._rank_scores``), so the feature is
    computed the same way: the conversion model reads its own feature columns (item and query-item statistics,
    price) from ``frame`` and fills what is missing exactly as at its training. Without a model (no conversion
    champion yet) every row gets ``CONVERSION_DEFAULT``. ``frame`` may be plain columns (the scorer), which
    ``ConversionModel.predict`` reads like a frame.
    """
    n = n_rows(frame)
    if conversion_model is None or n == 0:
        return np.full(n, CONVERSION_DEFAULT, dtype=np.float64)
    return np.asarray(conversion_model.predict(frame), dtype=np.float64)


def examination_weights(position: np.ndarray, eta: float | None, cap: float) -> np.ndarray:
    """Inverse examination propensities ``min(p^eta, cap)`` (1 everywhere when ``eta`` is None).

    The cap trades a little bias for a lot less variance: with eta ~ 1, a click at position 10 would otherwise
    count ten times a click at position 1.
    """
    pos = np.maximum(np.asarray(position, dtype=np.float64), 1.0)
    if eta is None:
        return np.ones(len(pos))
    return np.minimum(pos ** float(eta), float(cap))


@dataclass
class RankerModel:
    """The native model serving loads: ``score(ranker_frame(candidates))`` -> higher is better."""

    booster: Any                      # xgboost.Booster
    feature_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)   # objective, debias, position_bias_eta, conversion version

    def score(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Scores of ``ranker_frame`` rows, or of ``ranker_matrix`` rows (a matrix: columns ``RANKER_FEATURES``)."""
        if len(X) == 0:
            return np.zeros(0)
        if isinstance(X, np.ndarray):
            if self.feature_names != list(RANKER_FEATURES):
                X = X[:, [RANKER_FEATURES.index(f) for f in self.feature_names]]
            data = X.astype(np.float32)
        else:
            # ranker_frame's columns are in RANKER_FEATURES order: skip the reindex copy when they match.
            data = (X if list(X.columns) == self.feature_names else X[self.feature_names]).to_numpy(dtype=np.float32)
        return np.asarray(xgb_predict(self.booster, data), dtype=np.float64)


def ndcg_by_request(frame: pd.DataFrame, score: np.ndarray, k: int = NDCG_K,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """NDCG@k per request that has at least one positive label (in order of first appearance), ordering each
    request by ``score`` descending.

    Ties are broken by logged position, so a constant scorer reproduces the logged order (deterministic).
    ``weights`` multiply each row's gain (2^label - 1): inverse examination propensities turn click labels into
    an unbiased estimate of relevance (IPS), and the ideal order is computed on the same weighted gains.
    Vectorised (one lexsort, no per-request loop): the gate bootstraps it and the LETOR benchmark runs it on
    thousands of queries.
    """
    label = frame["label"].to_numpy(dtype=np.float64)
    gain = 2.0 ** label - 1.0
    if weights is not None:
        gain = gain * np.asarray(weights, dtype=np.float64)
    pos = frame["position"].to_numpy(dtype=np.float64) if "position" in frame else np.zeros(len(frame))
    return ndcg_arrays(pd.factorize(frame["request_id"])[0], gain, np.asarray(score, dtype=np.float64), pos, k)


def ndcg_arrays(group: np.ndarray, gain: np.ndarray, score: np.ndarray, tiebreak: np.ndarray | None = None,
                k: int = NDCG_K) -> np.ndarray:
    """NDCG@k per group (integer codes ``0..G-1``) with at least one positive gain; see ``ndcg_by_request``."""
    n = len(group)
    if n == 0:
        return np.zeros(0)
    group = np.asarray(group, dtype=np.int64)
    tiebreak = np.zeros(n) if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    n_groups = int(group.max()) + 1
    first = np.full(n_groups, n, dtype=np.int64)

    def dcg(order: np.ndarray) -> np.ndarray:
        g = group[order]
        np.minimum.at(first, g, np.arange(n))
        rank = np.arange(n) - first[g]
        disc = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
        return np.bincount(g, weights=gain[order] * disc, minlength=n_groups)

    got = dcg(np.lexsort((tiebreak, -score, group)))
    first[:] = n
    ideal = dcg(np.lexsort((-gain, group)))
    keep = ideal > 0
    return got[keep] / ideal[keep]


def position_bias_eta(frame: pd.DataFrame, min_clicks: int = 30) -> float | None:
    """Examination propensity exponent eta (P(examine position p) ~ p^-eta), fitted on shuffled pages.

    On pages whose order the scorer shuffled (``position_randomized``), relevance is independent of position, so
    the click rate by position traces the examination curve alone. A weighted least-squares fit of
    log CTR on log position gives eta, clipped to [0, 2]. None when there are too few such clicks to fit.
    """
    if "position_randomized" not in frame.columns:
        return None
    shuffled = frame[frame["position_randomized"].fillna(False).astype(bool)]
    clicked = shuffled["label"] > 0
    if int(clicked.sum()) < min_clicks:
        return None
    by_pos = clicked.groupby(shuffled["position"]).agg(["sum", "count"])
    ctr = (by_pos["sum"] + 0.5) / (by_pos["count"] + 1.0)
    slope = np.polyfit(np.log(by_pos.index.to_numpy(dtype=np.float64)), np.log(ctr.to_numpy()), 1,
                       w=np.sqrt(by_pos["count"].to_numpy(dtype=np.float64)))[0]
    return float(np.clip(-slope, 0.0, 2.0))


def fit_booster(X: np.ndarray, gain: np.ndarray, qid: np.ndarray, params: dict[str, Any]) -> Any:
    """LambdaMART with XGBoost on rows sorted by ``qid``; ``gain`` is the per-row gain (``ndcg_exp_gain=False``).

    The one trainer behind the family (``RankerFamily.train``) and ``ltrr ranker eval-letor``. ``params``:
    objective, n_estimators, max_depth, max_leaves, grow_policy, learning_rate, min_child_weight, subsample,
    nthread, seed, lambdarank_unbiased, and any of ``PASSTHROUGH_PARAMS`` (missing ones: the family's defaults,
    then XGBoost's).
    """
    import xgboost as xgb

    p = {**RankerFamily.default_params, **params}
    extra: dict[str, Any] = {"lambdarank_unbiased": True} if p.get("lambdarank_unbiased") else {}
    # Passed through only when set, so XGBoost's own defaults apply otherwise.
    for key in PASSTHROUGH_PARAMS:
        if p.get(key) is not None:
            extra[key] = p[key]
    model = xgb.XGBRanker(
        objective=str(p["objective"]), eval_metric=f"ndcg@{NDCG_K}", tree_method="hist", ndcg_exp_gain=False,
        n_estimators=int(p["n_estimators"]), max_depth=int(p["max_depth"]),
        max_leaves=int(p.get("max_leaves", 0)), grow_policy=str(p.get("grow_policy", "depthwise")),
        learning_rate=float(p["learning_rate"]), min_child_weight=float(p["min_child_weight"]),
        subsample=float(p["subsample"]), n_jobs=int(p["nthread"]), random_state=int(p["seed"]), **extra,
    )
    model.fit(np.asarray(X, dtype=np.float32), np.asarray(gain, dtype=np.float32), qid=qid)
    return model.get_booster()


class RankerFamily:
    """XGBoost LambdaMART over impressions, query group = request, position bias corrected by IPS gains."""

    name = "ranker"
    registered_model = "ltrr-ranker"
    # Floor: significantly better than a random order of the same candidates (lift over random minus two
    # paired-bootstrap standard errors > 0). The logged order is recorded too (``baseline_ndcg@10``) but not gated
    # on: clicks were collected *in* that order, and with position bias (CTR at position 1 is ~3x position 2 in
    # the simulator) it wins on click labels whatever its true quality. Against a champion, ``compare`` decides:
    # both are scored on the same holdout requests with the same IPS weights, and the lower bound of the paired
    # bootstrap interval of the NDCG@10 difference must be above ``min_delta`` (0).
    gate_spec = GateSpec(metric=GATE_METRIC, direction="max", floor=0.0, min_delta=0.0)
    extra_floors: ClassVar[dict[str, float]] = {f"lift_vs_random_lower@{NDCG_K}": 0.0}
    default_params: ClassVar[dict[str, Any]] = {
        # objective and debiasing chosen by measurement (bench/bench_ranker.py, docs/ranker.md)
        "objective": "rank:ndcg", "debias": "ips", "max_ips_weight": 10.0,
        "n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "min_child_weight": 5.0,
        "subsample": 1.0, "nthread": 1, "seed": 0, "max_leaves": 0,
        "min_train_requests": 20, "min_holdout_requests": 5, "min_randomized_clicks": 30,
        "gate_bootstrap": 1000, "gate_alpha": 0.05,
        # Training-set cap (whole requests, chosen by hash): past ~50k requests 100 depth-3 trees gain nothing
        # measurable, while the point-in-time join and attr_match grow linearly (docs/scale.md).
        "max_requests": 50_000,
    }

    # ---- data ----
    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Impressions with labels (``label_ranker``) + point-in-time Feast features of service ``ranker_v1``
        + ``attr_match`` from ``dim_items`` and the filled attributes + ``p_conversion`` from the conversion model
        in ``ctx.params["conversion_model"]`` (the entry point passes the conversion @champion; none -> default)."""
        entity_df = read_sampled_requests(Path(ctx.marts_dir) / "label_ranker.parquet",
                                          int(ctx.params.get("max_requests", self.default_params["max_requests"])))
        if entity_df.empty:
            raise NotEnoughData("label_ranker is empty")
        entity_df = with_attr_match(entity_df, Path(ctx.marts_dir))
        if ctx.feast_repo is not None:
            from ml.feature_store import (
                historical_features,  # Feast is heavy; only the training path needs it
            )

            entity_df = historical_features(ctx.feast_repo, ctx.feast_env, entity_df, "ranker_v1")
        entity_df[CONVERSION_FEATURE] = conversion_feature(ctx.params.get("conversion_model"), entity_df)
        return entity_df

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        return time_split(frame, ctx, group_col="request_id")

    # ---- model ----
    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> RankerModel:
        """LambdaMART on IPS-weighted gains (``debias="ips"``), or XGBoost's Unbiased LambdaMART
        (``debias="unbiased"``), or raw grades (``"none"``); ``objective`` rank:ndcg or rank:pairwise."""
        p = {**self.default_params, **params}
        objective, debias = str(p["objective"]), str(p["debias"])
        if objective not in OBJECTIVES:
            raise ValueError(f"ranker objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
        if debias not in DEBIAS_MODES:
            raise ValueError(f"ranker debias {debias!r}: expected one of {', '.join(DEBIAS_MODES)}")
        # The examination curve is a property of the page layout: fitted on every shuffled page of the training
        # window (far more than one day's), before requests without a positive label are dropped.
        eta = p.get("position_bias_eta")
        if eta is None and debias == "ips":
            eta = position_bias_eta(frame, int(p["min_randomized_clicks"]))
        # Requests with no positive label carry no pairwise signal for LambdaMART: skip them.
        has_pos = frame.groupby("request_id")["label"].transform("max") > 0
        # Sorted by position within each request: Unbiased LambdaMART reads the row order as the position.
        df = frame.loc[has_pos].sort_values(["request_id", "position"], kind="mergesort")
        n_req = df["request_id"].nunique()
        if n_req < int(p["min_train_requests"]):
            raise NotEnoughData(f"ranker: {n_req} training requests with a positive label "
                                f"(< {p['min_train_requests']})")
        X = ranker_frame(df)
        qid = pd.factorize(df["request_id"])[0]   # contiguous because df is sorted by request_id
        # The label handed to XGBoost is the gain itself (ndcg_exp_gain=False): 2^grade - 1 for graded labels,
        # times the inverse examination propensity under IPS. A float gain is what lets IPS reach the NDCG the
        # objective optimises; with integer grades and exp gain (XGBoost's default) the weights could not.
        weights = examination_weights(df["position"].to_numpy(), eta if debias == "ips" else None,
                                      float(p["max_ips_weight"]))
        gain = (2.0 ** df["label"].to_numpy(dtype=np.float64) - 1.0) * weights
        booster = fit_booster(X.to_numpy(dtype=np.float32), gain, qid, {**p, "lambdarank_unbiased": debias == "unbiased"})
        meta = {
            "objective": objective, "debias": debias if (debias != "ips" or eta is not None) else "none",
            "position_bias_eta": None if eta is None else float(eta), "max_ips_weight": float(p["max_ips_weight"]),
            "conversion_version": p.get("conversion_version"),
            "n_train_requests": int(n_req), "n_train_rows": len(df),
        }
        if debias == "ips" and eta is None:
            meta["debias_note"] = "too few clicks on shuffled pages to fit eta: trained on raw grades"
        return RankerModel(booster=booster, feature_names=list(RANKER_FEATURES), meta=meta)

    # ---- judging ----
    def _judge_weights(self, holdout: pd.DataFrame, model: RankerModel | None) -> tuple[np.ndarray | None, dict]:
        """IPS weights for judging on ``holdout``: eta fitted on its shuffled pages when there are enough clicks,
        else the eta the model fitted on its (much larger) training window; None when neither exists."""
        eta = position_bias_eta(holdout, int(self.default_params["min_randomized_clicks"]))
        source = "holdout"
        if eta is None and model is not None and getattr(model, "meta", {}).get("position_bias_eta") is not None:
            eta, source = float(model.meta["position_bias_eta"]), "training"
        if eta is None:
            return None, {"ips_weighted": 0.0}
        w = examination_weights(holdout["position"].to_numpy(), eta, float(self.default_params["max_ips_weight"]))
        return w, {"ips_weighted": 1.0, "position_bias_eta": float(eta),
                   "eta_from_training": float(source == "training")}

    def _check_holdout(self, holdout: pd.DataFrame) -> None:
        min_req = int(self.default_params["min_holdout_requests"])
        n_req = holdout.loc[holdout["label"] > 0, "request_id"].nunique() if len(holdout) else 0
        if n_req < min_req:
            raise NotEnoughData(f"ranker: {n_req} holdout requests with a positive label (< {min_req})")

    def evaluate(self, model: RankerModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Mean NDCG@10 over holdout requests with a positive label, and the logged order's NDCG as baseline."""
        self._check_holdout(holdout)
        # Clicks were collected in the order that was served (usually the champion's), and position bias makes
        # that order look better than it is: every click is weighted by its inverse examination propensity (IPS).
        weights, info = self._judge_weights(holdout, model)
        ndcg = ndcg_by_request(holdout, model.score(ranker_frame(holdout)), weights=weights)
        # Baseline: the logged order (score = -position).
        base = ndcg_by_request(holdout, -holdout["position"].to_numpy(dtype=np.float64), weights=weights)
        rng = np.random.default_rng(0)
        rand = np.mean([ndcg_by_request(holdout, rng.random(len(holdout)), weights=weights) for _ in range(5)],
                       axis=0)
        diff = np.asarray(ndcg) - np.asarray(rand)
        lift_random, lift_random_se = float(diff.mean()), bootstrap_se(diff)  # paired over requests
        return {
            GATE_METRIC: float(ndcg.mean()),
            f"baseline_ndcg@{NDCG_K}": float(base.mean()),
            f"ndcg_lift@{NDCG_K}": float(ndcg.mean() - base.mean()),
            f"random_ndcg@{NDCG_K}": float(np.mean(rand)),
            f"lift_vs_random_lower@{NDCG_K}": lift_random - 2 * lift_random_se,
            **info,
            "n_holdout_requests": float(len(ndcg)),
            "n_holdout_rows": float(len(holdout)),
        }

    def compare(self, challenger: RankerModel, champion: Any, holdout: pd.DataFrame) -> tuple[bool, str, dict]:
        """Paired gate: both models order the same holdout requests, judged with the same IPS weights.

        The per-request NDCG@10 differences are resampled over requests (paired bootstrap, ``gate_bootstrap``
        draws); the challenger is promoted only when the lower ``gate_alpha / 2`` quantile of the mean difference
        is above ``min_delta``, i.e. it beats the champion beyond the noise of this holdout.
        """
        self._check_holdout(holdout)
        weights, info = self._judge_weights(holdout, challenger)
        X = ranker_frame(holdout)
        a = ndcg_by_request(holdout, challenger.score(X), weights=weights)
        b = ndcg_by_request(holdout, champion.score(X), weights=weights)
        lo, hi, mean = paired_bootstrap(a - b, int(self.default_params["gate_bootstrap"]),
                                        float(self.default_params["gate_alpha"]))
        passed = bool(lo > self.gate_spec.min_delta)
        numbers = {f"paired_diff@{NDCG_K}": mean, f"paired_diff_lower@{NDCG_K}": lo,
                   f"paired_diff_upper@{NDCG_K}": hi, "paired_n_requests": float(len(a)), **info}
        verdict = "beats" if passed else "does not beat"
        reason = (f"{GATE_METRIC} challenger {a.mean():.4f} vs champion {b.mean():.4f} on the same {len(a)} "
                  f"requests{' (IPS-weighted)' if weights is not None else ''}: paired difference {mean:+.4f}, "
                  f"{100 * (1 - float(self.default_params['gate_alpha'])):.0f}% bootstrap interval "
                  f"[{lo:+.4f}, {hi:+.4f}]; {verdict} the champion beyond noise (lower bound > "
                  f"{self.gate_spec.min_delta:g})")
        return passed, reason, numbers

    # ---- persistence ----
    def save(self, model: RankerModel, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.booster.save_model(str(path / MODEL_FILE))
        (path / META_FILE).write_text(json.dumps({"feature_names": model.feature_names, "meta": model.meta},
                                                 indent=2, default=str))

    def load(self, path: Path) -> RankerModel:
        import xgboost as xgb

        path = Path(path)
        booster = xgb.Booster()
        booster.load_model(str(path / MODEL_FILE))
        booster.set_param({"nthread": 1})   # serving scores one request at a time; don't fight for cores
        meta = json.loads((path / META_FILE).read_text())
        return RankerModel(booster=booster, feature_names=list(meta["feature_names"]), meta=meta.get("meta", {}))

    def pyfunc_predict(self, model: RankerModel, model_input: pd.DataFrame) -> np.ndarray:
        """What the MLflow pyfunc returns: one score per candidate row."""
        return model.score(ranker_frame(model_input))


def paired_bootstrap(diff: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                     seed: int = 0) -> tuple[float, float, float]:
    """(lower, upper, mean) of the percentile bootstrap interval of the mean of paired differences."""
    d = np.asarray(diff, dtype=np.float64)
    if len(d) < 2:
        return float("-inf"), float("inf"), float(d.mean()) if len(d) else float("nan")
    rng = np.random.default_rng(seed)
    # Resampling counts per request (multinomial) instead of index arrays: n_boot x n memory stays small.
    counts = rng.multinomial(len(d), np.full(len(d), 1.0 / len(d)), size=n_boot)
    means = counts @ d / len(d)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), float(d.mean())


# --------------------------------------------------------------------------------------------------------------
# LETOR / SVMlight files: the same trainer on public learning-to-rank data (``ltrr ranker eval-letor``)


class LetorFormatError(ValueError):
    """A LETOR/SVMlight file that cannot be read; the message names the file, line and what is wrong."""


@dataclass
class LetorData:
    """Rows of a LETOR file: dense features (column j = feature id j + 1), graded labels, query ids (in file
    order, contiguous per query as LETOR files are)."""

    X: np.ndarray
    label: np.ndarray
    qid: np.ndarray

    @property
    def n_queries(self) -> int:
        return len(np.unique(self.qid))


def read_letor(path: Path, n_features: int | None = None) -> LetorData:
    """Parse ``label qid:Q f:v f:v ... [# comment]`` lines (LETOR 4.0 / MSLR-WEB / SVMlight ranking format).

    Strict, with a useful error (file, line number, the offending token) for: a label that is not a non-negative
    integer, a missing ``qid:``, a token that is not ``int:float``, a feature id < 1, or a query whose rows are
    not contiguous. Absent features are 0 (SVMlight's sparse convention).
    """
    path = Path(path)
    if not path.exists():
        raise LetorFormatError(f"{path}: no such file")
    labels: list[int] = []
    qids: list[str] = []
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    max_id = 0
    seen_q: set[str] = set()
    last_q: str | None = None
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            tokens = line.split()
            where = f"{path}:{lineno}"
            try:
                label = int(float(tokens[0]))
                if label < 0 or float(tokens[0]) != label:
                    raise ValueError
            except ValueError:
                raise LetorFormatError(f"{where}: label {tokens[0]!r} is not a non-negative integer grade") from None
            if len(tokens) < 2 or not tokens[1].startswith("qid:") or len(tokens[1]) == 4:
                raise LetorFormatError(f"{where}: expected 'qid:<id>' after the label, got "
                                       f"{tokens[1] if len(tokens) > 1 else 'nothing'!r}")
            q = tokens[1][4:]
            if q != last_q:
                if q in seen_q:
                    raise LetorFormatError(f"{where}: rows of query {q!r} are not contiguous (sort the file by qid)")
                seen_q.add(q)
                last_q = q
            ids = np.empty(len(tokens) - 2, dtype=np.int64)
            vals = np.empty(len(tokens) - 2, dtype=np.float64)
            for j, tok in enumerate(tokens[2:]):
                fid, sep, val = tok.partition(":")
                try:
                    if not sep:
                        raise ValueError
                    ids[j], vals[j] = int(fid), float(val)
                except ValueError:
                    raise LetorFormatError(f"{where}: feature token {tok!r} is not '<id>:<value>'") from None
                if ids[j] < 1:
                    raise LetorFormatError(f"{where}: feature id {ids[j]} < 1 (ids are 1-based)")
            if len(ids):
                max_id = max(max_id, int(ids.max()))
            labels.append(label)
            qids.append(q)
            rows.append((ids, vals))
    if not rows:
        raise LetorFormatError(f"{path}: no data lines")
    width = max(max_id, n_features or 0)
    X = np.zeros((len(rows), width), dtype=np.float32)
    for i, (ids, vals) in enumerate(rows):
        keep = ids <= width
        X[i, ids[keep] - 1] = vals[keep]
    return LetorData(X=X, label=np.asarray(labels, dtype=np.int64), qid=pd.factorize(np.asarray(qids))[0])


def letor_ndcg(data: LetorData, score: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Mean NDCG@k (gain 2^label - 1) over the queries with at least one relevant row; ties broken by file order.

    Queries without a relevant row are left out (their NDCG is undefined); LightGBM's metric counts them as 1.
    Both models of a comparison are judged by this one function.
    """
    gain = 2.0 ** data.label.astype(np.float64) - 1.0
    order = np.arange(len(score), dtype=np.float64)
    out = {f"ndcg@{k}": float(ndcg_arrays(data.qid, gain, np.asarray(score, dtype=np.float64), order, k).mean())
           for k in ks}
    out["n_queries_judged"] = float(len(ndcg_arrays(data.qid, gain, np.asarray(score, dtype=np.float64), order, 1)))
    return out


# Defaults of ``train_letor`` / ``ltrr ranker eval-letor``: the family's trainer at LightGBM lambdarank's size
# (31 leaves grown leaf-wise, learning rate 0.1, 100 trees). The rest was chosen by query-grouped cross-validation
# on the MSLR *train* file only (bench/bench_letor.py: a knob is adopted only when the paired CV interval of its
# gain over the current choice is above 0): min_child_weight 5 (+0.021 NDCG@10 [+0.004, +0.039]), a hessian floor
# per leaf where LightGBM has min_data_in_leaf 20; every other knob (reg_lambda 0 as LightGBM's lambda_l2, topk 30
# pairs as its truncation level, max_bin 255, depth-wise growth, mean pairs, no lambda or score normalisation,
# rank:pairwise, learning rate 0.2; LightGBM's count floor as a hessian floor, alone and with all of LightGBM's
# other settings) stayed within noise and XGBoost's default is kept. Learning rate 0.2 is
# LightGBM's step at 0.1: XGBoost's lambdarank hessian is twice LightGBM's for the same pair (test
# ``test_xgboost_lambdarank_step_is_half_lightgbms_at_the_same_learning_rate``), so at 0.1 our Newton steps are
# half LightGBM's; matching them gained +0.011 [-0.011, +0.035] (with reg_lambda 0), not adopted. The nightly ranker
# has the same objective and min_child_weight but shallower depth-wise trees (``RankerFamily.default_params``;
# docs/ranker.md says why).
LETOR_PARAMS: dict[str, Any] = {
    "objective": "rank:ndcg", "n_estimators": 100, "max_depth": 0, "max_leaves": 31, "grow_policy": "lossguide",
    "learning_rate": 0.1, "min_child_weight": 5.0, "reg_lambda": 1.0, "nthread": 1, "seed": 0,
}


def train_letor(train: LetorData, params: dict[str, Any] | None = None) -> Any:
    """The family's trainer (``fit_booster``) on LETOR rows, ``LETOR_PARAMS`` updated with ``params``: graded
    labels, gain 2^label - 1, no position debias (the labels are editorial judgments, not clicks)."""
    gain = 2.0 ** train.label.astype(np.float64) - 1.0
    return fit_booster(train.X, gain, train.qid, {**LETOR_PARAMS, **(params or {})})


# XGBoost's top-k pair count when ``lambdarank_num_pair_per_sample`` is unset (its ``topk`` default).
XGBOOST_TOPK_DEFAULT = 32


def lightgbm_equivalent(params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``LGBMRanker`` parameters that grow the trees ``train_letor(params)`` grows: a diagnostic that tells
    configuration apart from implementation (bench/bench_letor.py).

    Both lambdarank objectives give the same gradients; LightGBM's hessians are half XGBoost's (see
    ``test_xgboost_lambdarank_step_is_half_lightgbms_at_the_same_learning_rate``), so half the learning rate, the
    L2 term and the hessian floor give the same split gains (up to a factor) and leaf values. LightGBM's count
    floor is switched off (``min_data_in_leaf`` 1: XGBoost has none) and its truncation level is XGBoost's top k.
    Only for what LETOR uses: leaf-wise ``rank:ndcg`` with top-k pairs and both normalisations on. Feature and row
    subsampling map to LightGBM's fractions (``feature_fraction_bynode``, ``feature_fraction``, ``bagging_fraction``
    every round): the same fractions, drawn by another generator, so the trees are alike in distribution only.
    """
    p = {**LETOR_PARAMS, **(params or {})}
    if (p["objective"] != "rank:ndcg" or p["grow_policy"] != "lossguide" or int(p.get("max_depth", 0)) != 0
            or p.get("lambdarank_pair_method", "topk") != "topk" or p.get("lambdarank_normalization", True) is False
            or p.get("lambdarank_score_normalization", True) is False):
        raise ValueError("lightgbm_equivalent covers leaf-wise rank:ndcg with top-k pairs and normalisation on")
    return {"objective": "lambdarank", "n_estimators": int(p["n_estimators"]), "num_leaves": int(p["max_leaves"]),
            "learning_rate": float(p["learning_rate"]) / 2, "reg_lambda": float(p.get("reg_lambda", 1.0)) / 2,
            "min_child_weight": float(p["min_child_weight"]) / 2, "min_child_samples": 1,
            "lambdarank_truncation_level": int(p.get("lambdarank_num_pair_per_sample") or XGBOOST_TOPK_DEFAULT),
            "max_bin": int(p.get("max_bin", 256)), "n_jobs": int(p["nthread"]), "random_state": int(p["seed"]),
            "verbose": -1, **_lightgbm_sampling(p)}


def _lightgbm_sampling(p: dict[str, Any]) -> dict[str, Any]:
    """LightGBM's names for XGBoost's feature and row subsampling in ``p`` (only those set below 1)."""
    out: dict[str, Any] = {}
    if float(p.get("colsample_bynode", 1.0)) < 1.0:
        out["feature_fraction_bynode"] = float(p["colsample_bynode"])
    if float(p.get("colsample_bytree", 1.0)) < 1.0:
        out["colsample_bytree"] = float(p["colsample_bytree"])
    if float(p.get("subsample", 1.0)) < 1.0:
        out.update(subsample=float(p["subsample"]), subsample_freq=1)
    return out


FAMILY = RankerFamily()
