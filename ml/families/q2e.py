"""q2e family: query-to-entity memory, the items each query actually engaged with, scored from interactions.

Per (query_norm, item_id), with every impression decayed by its age (``0.5 ** (age_days / half_life_days)``,
age relative to the newest event in the training frame, never ``now()``):

    n     = sum of decayed impressions
    g     = sum of decayed grade weights (label 1 click, 2 add-to-cart, 3 purchase -> ``grade_weights``)
    score = (g + a * prior) / (n + a)          a = ``prior_strength``, prior = the global decayed g / n
    confidence = n / (n + a)

The score is an exponentially weighted engagement rate shrunk toward the global rate: one click out of
one impression ranks below 30 out of 100, and a stale hit loses to a fresh one. Only pairs with at least
one engagement are remembered (the memory recalls what users did, not what we showed), the ``top_n`` best
per query. The model also keeps the global most-engaged items: the popularity baseline of ``evaluate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.families.base import GateSpec, NotEnoughData, TrainContext, time_split
from ml.text import normalize_query

MART = "label_ranker.parquet"
COLUMNS: tuple[str, ...] = ("request_id", "event_timestamp", "query_norm", "item_id", "position", "label")
TABLE_COLUMNS: tuple[str, ...] = ("query_norm", "item_id", "score", "confidence", "impressions", "engagements")
EVAL_K = 10   # the gate metric is recall@10: the first page the scorer shows


@dataclass
class Q2EModel:
    """What serving loads: ``lookup(query_norm, k)`` -> [(item_id, score)] best first."""

    table: pd.DataFrame                      # TABLE_COLUMNS, sorted by query then score desc
    popular: list[str]                       # global most-engaged items (popularity baseline)
    meta: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, list[tuple[str, float]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        t = self.table.sort_values(["query_norm", "score", "item_id"], ascending=[True, False, True])
        self.table = t.reset_index(drop=True)
        self._index = {
            str(q): [(str(i), float(s)) for i, s in zip(g["item_id"], g["score"])]
            for q, g in self.table.groupby("query_norm", sort=False)
        }

    @property
    def n_queries(self) -> int:
        return len(self._index)

    @property
    def n_entries(self) -> int:
        return len(self.table)

    def lookup(self, query_norm: str, k: int) -> list[tuple[str, float]]:
        """The k best remembered items for a normalized query ([] if the query is unknown)."""
        hits = self._index.get(query_norm)
        if hits is None:                      # tolerate a raw query; normalized keys are the contract
            hits = self._index.get(normalize_query(query_norm), [])
        return hits[: max(int(k), 0)]


def _grades(labels: pd.Series, grade_weights: dict) -> np.ndarray:
    gw = {int(k): float(v) for k, v in grade_weights.items()}
    return labels.fillna(0).astype(int).map(lambda g: gw.get(g, 0.0)).to_numpy(dtype=float)


class Q2EFamily:
    name = "q2e"
    registered_model = "ltrr-q2e"
    # Gate metric: recall@10 of engaged items over ALL holdout requests with an engagement (a query the
    # memory does not know scores 0), so champion and challenger are judged on the same requests. A memory
    # that remembers nothing scores 0; the floor asks for a little more. `recall@10_popularity` (the
    # baseline) and `recall@10_covered` (known queries only) are recorded beside it, not gated.
    gate_spec = GateSpec(metric="recall@10", direction="max", floor=0.05, min_delta=0.0)
    default_params: ClassVar[dict[str, Any]] = {
        "half_life_days": 14.0,               # 0 or None: no decay
        "prior_strength": 10.0,
        "grade_weights": {1: 1.0, 2: 2.0, 3: 3.0},
        "top_n": 100,
        "n_popular": 100,
        "min_impressions": 20,
    }

    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Impressions with their graded label. The memory needs only interactions: no Feast join."""
        frame = pd.read_parquet(Path(ctx.marts_dir) / MART, columns=list(COLUMNS))
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        return frame

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Later requests judge the memory built from earlier ones (a request never straddles the split)."""
        return time_split(frame, ctx, group_col="request_id")

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> Q2EModel:
        p = {**self.default_params, **(params or {})}
        if len(frame) < int(p["min_impressions"]):
            raise NotEnoughData(f"q2e: {len(frame)} impressions")
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        half_life = p.get("half_life_days")
        if half_life:
            age_days = (ts.max() - ts).dt.total_seconds().to_numpy() / 86400.0
            decay = np.power(0.5, age_days / float(half_life))
        else:
            decay = np.ones(len(frame))
        g = _grades(frame["label"], p["grade_weights"])
        work = pd.DataFrame({
            "query_norm": frame["query_norm"].astype(str).to_numpy(),
            "item_id": frame["item_id"].astype(str).to_numpy(),
            "n": decay, "g": g * decay, "raw_g": g,
        })
        if work["raw_g"].sum() <= 0:
            raise NotEnoughData("q2e: no engagement in the training interactions")
        prior = float(work["g"].sum() / work["n"].sum())
        a = float(p["prior_strength"])

        pairs = work.groupby(["query_norm", "item_id"], sort=False).agg(
            impressions=("n", "sum"), engagements=("g", "sum"), raw=("raw_g", "sum")).reset_index()
        pairs = pairs.loc[pairs["raw"] > 0]
        pairs["score"] = (pairs["engagements"] + a * prior) / (pairs["impressions"] + a)
        pairs["confidence"] = pairs["impressions"] / (pairs["impressions"] + a)
        pairs = pairs.sort_values(["query_norm", "score", "item_id"], ascending=[True, False, True])
        pairs = pairs.groupby("query_norm", sort=False).head(int(p["top_n"]))

        pop = work.groupby("item_id")["g"].sum().sort_values(ascending=False, kind="stable")
        popular = pop[pop > 0].head(int(p["n_popular"])).index.tolist()
        meta = {"prior": prior, "newest_event": ts.max().isoformat(), "n_train_impressions": len(frame),
                "params": {k: v for k, v in p.items() if k != "grade_weights"},
                "grade_weights": {str(k): float(v) for k, v in p["grade_weights"].items()}}
        return Q2EModel(table=pairs[list(TABLE_COLUMNS)].reset_index(drop=True), popular=popular, meta=meta)

    def evaluate(self, model: Q2EModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Recall@k of the items a holdout request clicked (or better), memory vs popularity baseline."""
        k = EVAL_K
        engaged = holdout.loc[holdout["label"].fillna(0).astype(int) >= 1]
        if engaged.empty:
            raise NotEnoughData("q2e: no engaged impression in the holdout")
        popular = set(model.popular[:k])
        rec_mem, rec_pop, covered = [], [], []
        for (_, query), g in engaged.groupby(["request_id", "query_norm"], sort=False):
            relevant = set(g["item_id"].astype(str))
            hits = model.lookup(str(query), k)
            covered.append(bool(hits))
            rec_mem.append(len(relevant & {i for i, _ in hits}) / len(relevant))
            rec_pop.append(len(relevant & popular) / len(relevant))
        rec_mem_a, rec_pop_a, cov = np.array(rec_mem), np.array(rec_pop), np.array(covered)
        return {
            f"recall@{k}": float(rec_mem_a.mean()),
            f"recall@{k}_popularity": float(rec_pop_a.mean()),
            f"recall@{k}_covered": float(rec_mem_a[cov].mean()) if cov.any() else 0.0,
            f"recall@{k}_popularity_covered": float(rec_pop_a[cov].mean()) if cov.any() else 0.0,
            "coverage": float(cov.mean()),
            "n_eval_requests": float(len(cov)),
            "n_queries": float(model.n_queries),
            "n_entries": float(model.n_entries),
        }

    def pyfunc_predict(self, model: Q2EModel, frame: pd.DataFrame) -> pd.DataFrame:
        """MLflow pyfunc input: ``query_norm`` (and optional ``k``, default 10) -> one row per remembered item."""
        rows = []
        for _, r in frame.iterrows():
            k = int(r["k"]) if "k" in frame.columns and pd.notna(r["k"]) else EVAL_K
            for rank, (item, score) in enumerate(model.lookup(str(r["query_norm"]), k), start=1):
                rows.append((r["query_norm"], item, score, rank))
        return pd.DataFrame(rows, columns=["query_norm", "item_id", "score", "rank"])

    def save(self, model: Q2EModel, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.table.to_parquet(path / "memory.parquet", index=False)
        (path / "meta.json").write_text(json.dumps(
            {"popular": model.popular, "meta": model.meta}, indent=2, sort_keys=True, default=str))

    def load(self, path: Path) -> Q2EModel:
        path = Path(path)
        info = json.loads((path / "meta.json").read_text())
        return Q2EModel(table=pd.read_parquet(path / "memory.parquet"), popular=info["popular"], meta=info["meta"])


FAMILY = Q2EFamily()
