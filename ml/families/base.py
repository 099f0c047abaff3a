"""The protocol every model family follows, and the pieces they share.

training_set(ctx) -> frame;  split(frame) -> (train, holdout);  train(train, params) -> model;
evaluate(model, holdout) -> metrics;  gate_spec says which metric decides promotion.
``save(model, dir)`` / ``load(dir)`` make the native model an MLflow pyfunc artifact (ml/registry.py).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
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
               group_col: str | None = None, holdout_share: float = 0.2,
               window_days: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the interval being closed (later data judges the model); with no earlier data, hold out a
    deterministic share of groups instead (by hash of ``group_col``, so a request never straddles the split).
    With ``window_days``, hold out that hash share of the last ``window_days`` days instead (``holdout_mask``)."""
    mask = holdout_mask(frame, ctx, ts_col, group_col, holdout_share, window_days)
    return frame.loc[~mask].reset_index(drop=True), frame.loc[mask].reset_index(drop=True)


def _hash_share(frame: pd.DataFrame, group_col: str | None, share: float) -> np.ndarray:
    keys = frame[group_col] if group_col else frame.index.to_series()
    h = pd.util.hash_pandas_object(keys.astype(str), index=False).to_numpy()
    return (h % 1000) < share * 1000


def holdout_mask(frame: pd.DataFrame, ctx: TrainContext, ts_col: str = "event_timestamp",
                 group_col: str | None = None, holdout_share: float = 0.2,
                 window_days: int | None = None) -> np.ndarray:
    """The rows ``time_split`` holds out, as a boolean array (a caller can split a wider frame without copying
    the rows twice).

    ``window_days`` (default None: the interval being closed, as above) holds out the ``holdout_share`` of groups
    (same hash) among the rows of the last ``window_days`` days before ``ctx.interval_end``: a holdout spanning
    several days, for a family whose one-day holdout is too small to judge a model (the bandit). The hash is
    fixed, so a group held out tonight was held out on every earlier night whose window contained it: a model
    trained on an earlier night never saw tonight's holdout.
    """
    ts = pd.to_datetime(frame[ts_col], utc=True)
    if window_days is not None:
        end = pd.Timestamp(ctx.interval_end)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        recent = (ts >= end - pd.Timedelta(days=int(window_days))).to_numpy()
        return recent & _hash_share(frame, group_col, holdout_share)
    start = pd.Timestamp(ctx.interval_start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    mask = (ts >= start).to_numpy()
    if mask.all() or not mask.any():
        mask = _hash_share(frame, group_col, holdout_share)
    return mask


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


def n_rows(columns: pd.DataFrame | Mapping[str, Any]) -> int:
    """Rows of a DataFrame, or the length of a mapping's columns (0 for an empty mapping)."""
    if isinstance(columns, pd.DataFrame):
        return len(columns)
    return len(next(iter(columns.values()))) if columns else 0


_XGB_THREAD = threading.local()


def xgb_predict(booster: Any, data: np.ndarray) -> np.ndarray:
    """``booster.inplace_predict(data)`` (default arguments) for a dense matrix: the same numbers, less set-up.

    For each call XGBoost's wrapper makes the C API build a new proxy DMatrix, whose context reads the cgroup CPU
    quota from /sys: ~40 us of a ~100 us prediction of 100 rows, twice per scorer request. The C API takes a proxy
    from the caller instead; this keeps one per thread (a proxy is not safe to share between threads). Falls back
    to ``inplace_predict`` when XGBoost's internals differ (another version).
    """
    try:
        from xgboost.core import (
            _LIB,
            _check_call,
            _prediction_output,
            _ProxyDMatrix,
            c_bst_ulong,
            make_jcargs,
        )
        from xgboost.data import array_interface
    except ImportError:
        return booster.inplace_predict(data)
    proxy = getattr(_XGB_THREAD, "proxy", None)
    if proxy is None:
        proxy = _XGB_THREAD.proxy = _ProxyDMatrix()
    # inplace_predict's defaults: value output, all trees, NaN is missing
    args = make_jcargs(type=0, training=False, iteration_begin=0, iteration_end=0, missing=np.nan,
                       strict_shape=False, cache_id=0)
    data = np.ascontiguousarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != booster.num_features():
        raise ValueError(f"expected a (rows, {booster.num_features()}) matrix, got shape {data.shape}")
    preds, shape, dims = ctypes.POINTER(ctypes.c_float)(), ctypes.POINTER(c_bst_ulong)(), c_bst_ulong()
    _check_call(_LIB.XGBoosterPredictFromDense(booster.handle, array_interface(data), args, proxy.handle,
                                               ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds)))
    return _prediction_output(shape, dims, preds, False)


def float_column(col: Any) -> np.ndarray:
    """A column (Series, array or list) as float64, NaN where missing or not a number (``pd.to_numeric`` rules)."""
    if isinstance(col, pd.Series):
        if col.dtype.kind in "fiub":
            return col.to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(col)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    return float_column(pd.Series(arr, dtype=object))


def read_mart(path: Path, columns: Sequence[str] | None = None, categorical: Sequence[str] = (),
              filters: list[tuple[str, str, Any]] | None = None) -> pd.DataFrame:
    """A mart's Parquet as pandas, lean: ``categorical`` string columns as categoricals (Arrow dictionaries, one
    Python string per distinct value), only ``columns`` and the rows ``filters`` keeps (pyarrow's DNF filters), and
    the memory Arrow used for reading and converting handed back to the OS (its allocator keeps freed pages: at
    3M events a day that was ~300 MB per mart read, held for the rest of the task)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(columns) if columns is not None else None,
                          read_dictionary=list(categorical) or None, filters=filters)
    frame = table.to_pandas()
    del table
    pa.default_memory_pool().release_unused()
    return frame
