"""The protocol every model family follows, and the pieces they share.

training_set(ctx) -> frame;  split(frame) -> (train, holdout);  train(train, params) -> model;
evaluate(model, holdout) -> metrics;  gate_spec says which metric decides promotion.
``save(model, dir)`` / ``load(dir)`` make the native model an MLflow pyfunc artifact (ml/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd


@dataclass(frozen=True)
class TrainContext:
    """Everything a trainer may read, bound by the entry point (DAG task, test)."""

    interval_start: datetime          # the data interval being closed (UTC, inclusive)
    interval_end: datetime            # exclusive
    marts_dir: Path                   # dbt marts as Parquet (dim_items.parquet, label_*.parquet, ...)
    feast_repo: Path | None = None    # Feast repo (feature_store.yaml); None = read marts only (unit tests)
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    feast_env: dict[str, str] = field(default_factory=dict)  # env vars the Feast repo's ${VAR}s need


@dataclass(frozen=True)
class GateSpec:
    """A promotion rule: an absolute floor, and a change against the champion on the same holdout."""

    metric: str
    direction: Literal["max", "min"] = "max"
    floor: float | None = None        # the first version must reach it (max) or stay under it (min)
    min_delta: float = 0.0            # challenger must beat champion by at least this (in the metric's units)
    # The champion's metric the challenger's ``metric`` is compared with (default: the same one). The bandit compares
    # its challenger's lower confidence bound with the champion's point estimate.
    champion_metric: str | None = None


class Family(Protocol):
    name: str
    gate_spec: GateSpec
    default_params: dict[str, Any]

    def training_set(self, ctx: TrainContext) -> pd.DataFrame: ...
    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]: ...
    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> Any: ...
    def evaluate(self, model: Any, holdout: pd.DataFrame) -> dict[str, float]: ...
    def save(self, model: Any, path: Path) -> None: ...
    def load(self, path: Path) -> Any: ...


class NotEnoughData(RuntimeError):
    """Raised by a trainer when the interval has too little data to train or judge a model.

    The DAG records it as a skipped family (the champion keeps serving), not as a failure.
    """


def time_split(frame: pd.DataFrame, ctx: TrainContext, ts_col: str = "event_timestamp",
               group_col: str | None = None, holdout_share: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the interval being closed (later data judges the model); with no earlier data, hold out a
    deterministic share of groups instead (by hash of ``group_col``, so a request never straddles the split)."""
    ts = pd.to_datetime(frame[ts_col], utc=True)
    start = pd.Timestamp(ctx.interval_start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    holdout_mask = ts >= start
    if holdout_mask.all() or not holdout_mask.any():
        keys = frame[group_col] if group_col else frame.index.to_series()
        h = pd.util.hash_pandas_object(keys.astype(str), index=False).to_numpy()
        holdout_mask = pd.Series((h % 1000) < holdout_share * 1000, index=frame.index)
    return frame.loc[~holdout_mask].reset_index(drop=True), frame.loc[holdout_mask].reset_index(drop=True)


def bootstrap_se(values, statistic=None, n_boot: int = 300, seed: int = 0) -> float:
    """Bootstrap standard error of ``statistic`` (default: the mean) over the rows of ``values``.

    Rows are resampled together (``values`` may be 2-D, e.g. reward and weight columns for SNIPS), so paired
    comparisons keep their pairing. Small holdouts are noisy; gates use this to refuse only what is
    significantly worse, not what is unlucky.
    """
    import numpy as np

    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float("inf")
    stat = statistic or (lambda a: float(a.mean()))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(arr), size=(n_boot, len(arr)))
    return float(np.std([stat(arr[i]) for i in idx], ddof=1))
