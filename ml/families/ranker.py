"""Ranker family: XGBoost learning-to-rank (LambdaMART, ``rank:ndcg``) over the candidates the strategies retrieve.

One row per impression; a request is a query group. ``ranker_frame`` is the one function that turns candidates
(retrieval scores + strategy + Feast features + ``attr_match``) into the model's input, for training and serving
alike. ``attr_match`` comes from ``ml.retrieval.structured.attr_match`` on the catalog plus the filled attributes
(``item_attributes.parquet``, see ``ml.backfill``), in ``training_set`` here and in the scorer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.events.schema import STRATEGIES
from ml.families.base import GateSpec, NotEnoughData, TrainContext, bootstrap_se, time_split
from ml.features import DEFAULTS, RANKER_FEATURES

NDCG_K = 10
GATE_METRIC = f"ndcg@{NDCG_K}"
MODEL_FILE = "model.json"          # XGBoost's own JSON format
META_FILE = "meta.json"


def ranker_frame(candidates: pd.DataFrame) -> pd.DataFrame:
    """The model input: columns ``RANKER_FEATURES`` in order, float, no NaN.

    ``from_<strategy>`` is the one-hot of the ``strategy`` column (which strategy retrieved the item); every other
    feature comes from the column of the same name, missing columns and values filled from ``DEFAULTS`` (else 0),
    exactly as the scorer fills a feature the online store does not have (new query, new item).
    """
    n = len(candidates)
    strategy = candidates["strategy"].astype(str).to_numpy() if "strategy" in candidates else np.full(n, "")
    cols: dict[str, np.ndarray] = {}
    for name in RANKER_FEATURES:
        if name.startswith("from_") and name[len("from_"):] in STRATEGIES:
            cols[name] = (strategy == name[len("from_"):]).astype(np.float64)
            continue
        default = float(DEFAULTS.get(name, 0.0))
        if name in candidates:
            values = pd.to_numeric(candidates[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            cols[name] = np.where(np.isnan(values), default, values)
        else:
            cols[name] = np.full(n, default)
    return pd.DataFrame(cols, index=candidates.index, columns=list(RANKER_FEATURES))


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


@dataclass
class RankerModel:
    """The native model serving loads: ``score(ranker_frame(candidates))`` -> higher is better."""

    booster: Any                      # xgboost.Booster
    feature_names: list[str]

    def score(self, X: pd.DataFrame) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        data = X[self.feature_names].to_numpy(dtype=np.float32)
        return np.asarray(self.booster.inplace_predict(data), dtype=np.float64)


def ndcg_by_request(frame: pd.DataFrame, score: np.ndarray, k: int = NDCG_K,
                    weights: np.ndarray | None = None) -> np.ndarray:
    """NDCG@k per request that has at least one positive label, ordering each request by ``score`` descending.

    Ties are broken by logged position, so a constant scorer reproduces the logged order (deterministic).
    ``weights`` multiply each row's gain (2^label - 1): inverse examination propensities turn click labels into
    an unbiased estimate of relevance (IPS), and the ideal order is computed on the same weighted gains.
    """
    label = frame["label"].to_numpy(dtype=np.float64)
    gain = 2.0 ** label - 1.0
    if weights is not None:
        gain = gain * np.asarray(weights, dtype=np.float64)
    df = pd.DataFrame({
        "rid": frame["request_id"].to_numpy(), "gain": gain,
        "score": np.asarray(score, dtype=np.float64),
        "pos": frame["position"].to_numpy(dtype=np.float64) if "position" in frame else np.zeros(len(frame)),
    })
    out = []
    for _, g in df.groupby("rid", sort=False):
        if g["gain"].max() <= 0:
            continue
        ordered = g.sort_values(["score", "pos"], ascending=[False, True], kind="mergesort")["gain"].to_numpy()
        ideal = np.sort(g["gain"].to_numpy())[::-1]
        disc = 1.0 / np.log2(np.arange(2, k + 2))
        out.append(float((ordered[:k] * disc[:len(ordered[:k])]).sum() / (ideal[:k] * disc[:len(ideal[:k])]).sum()))
    return np.asarray(out)


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


class RankerFamily:
    """XGBoost LambdaMART over impressions, query group = request."""

    name = "ranker"
    registered_model = "ltrr-ranker"
    # Floor: significantly better than a random order of the same candidates (lift over random minus two
    # paired-bootstrap standard errors > 0). The logged order is recorded too (``baseline_ndcg@10``) but not gated
    # on: clicks were collected *in* that order, and with position bias (CTR at position 1 is ~3x position 2 in
    # the simulator) it wins on click labels whatever its true quality. The same bias would favour the champion
    # (whose order was served), so ``evaluate`` weights clicks by inverse examination propensities estimated from
    # the pages the scorer shuffled (position exploration, ``position_randomized``) whenever there are enough of
    # them. min_delta 0: a fresher model of equal quality replaces the champion.
    gate_spec = GateSpec(metric=GATE_METRIC, direction="max", floor=0.0, min_delta=0.0)
    extra_floors: ClassVar[dict[str, float]] = {f"lift_vs_random_lower@{NDCG_K}": 0.0}
    default_params: ClassVar[dict[str, Any]] = {
        "n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "min_child_weight": 5.0,
        "subsample": 1.0, "nthread": 1, "seed": 0,
        "min_train_requests": 20, "min_holdout_requests": 5, "min_randomized_clicks": 30,
    }

    # ---- data ----
    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Impressions with labels (``label_ranker``) + point-in-time Feast features of service ``ranker_v1``
        + ``attr_match`` from ``dim_items`` and the filled attributes."""
        entity_df = pd.read_parquet(Path(ctx.marts_dir) / "label_ranker.parquet")
        if entity_df.empty:
            raise NotEnoughData("label_ranker is empty")
        entity_df = with_attr_match(entity_df, Path(ctx.marts_dir))
        if ctx.feast_repo is None:
            return entity_df
        from ml.feature_store import historical_features  # Feast is heavy; only the training path needs it

        return historical_features(ctx.feast_repo, ctx.feast_env, entity_df, "ranker_v1")

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        return time_split(frame, ctx, group_col="request_id")

    # ---- model ----
    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> RankerModel:
        import xgboost as xgb

        p = {**self.default_params, **params}
        # Requests with no positive label carry no pairwise signal for LambdaMART: skip them.
        has_pos = frame.groupby("request_id")["label"].transform("max") > 0
        df = frame.loc[has_pos].sort_values(["request_id", "position"], kind="mergesort")
        n_req = df["request_id"].nunique()
        if n_req < int(p["min_train_requests"]):
            raise NotEnoughData(f"ranker: {n_req} training requests with a positive label "
                                f"(< {p['min_train_requests']})")
        X = ranker_frame(df)
        qid = pd.factorize(df["request_id"])[0]   # contiguous because df is sorted by request_id
        model = xgb.XGBRanker(
            objective="rank:ndcg", eval_metric=f"ndcg@{NDCG_K}", tree_method="hist",
            n_estimators=int(p["n_estimators"]), max_depth=int(p["max_depth"]),
            learning_rate=float(p["learning_rate"]), min_child_weight=float(p["min_child_weight"]),
            subsample=float(p["subsample"]), n_jobs=int(p["nthread"]), random_state=int(p["seed"]),
        )
        model.fit(X.to_numpy(dtype=np.float32), df["label"].to_numpy(dtype=np.float32), qid=qid)
        return RankerModel(booster=model.get_booster(), feature_names=list(RANKER_FEATURES))

    def evaluate(self, model: RankerModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Mean NDCG@10 over holdout requests with a positive label, and the logged order's NDCG as baseline."""
        min_req = int(self.default_params["min_holdout_requests"])
        n_req = holdout.loc[holdout["label"] > 0, "request_id"].nunique() if len(holdout) else 0
        if n_req < min_req:
            raise NotEnoughData(f"ranker: {n_req} holdout requests with a positive label (< {min_req})")
        # Clicks were collected in the order that was served (usually the champion's), and position bias makes
        # that order look better than it is. With enough shuffled pages in the holdout, every click is weighted
        # by its inverse examination propensity (IPS), estimated from those shuffled pages; otherwise the
        # labels are used as they are (and the logged-order baseline is flattered).
        eta = position_bias_eta(holdout, int(self.default_params["min_randomized_clicks"]))
        weights = None if eta is None else holdout["position"].to_numpy(dtype=np.float64) ** eta
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
            "ips_weighted": float(eta is not None),
            **({} if eta is None else {"position_bias_eta": eta}),
            "n_holdout_requests": float(len(ndcg)),
            "n_holdout_rows": float(len(holdout)),
        }

    # ---- persistence ----
    def save(self, model: RankerModel, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.booster.save_model(str(path / MODEL_FILE))
        (path / META_FILE).write_text(json.dumps({"feature_names": model.feature_names}, indent=2))

    def load(self, path: Path) -> RankerModel:
        import xgboost as xgb

        path = Path(path)
        booster = xgb.Booster()
        booster.load_model(str(path / MODEL_FILE))
        booster.set_param({"nthread": 1})   # serving scores one request at a time; don't fight for cores
        meta = json.loads((path / META_FILE).read_text())
        return RankerModel(booster=booster, feature_names=list(meta["feature_names"]))

    def pyfunc_predict(self, model: RankerModel, model_input: pd.DataFrame) -> np.ndarray:
        """What the MLflow pyfunc returns: one score per candidate row."""
        return model.score(ranker_frame(model_input))


FAMILY = RankerFamily()
