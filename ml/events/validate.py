"""Row-level validation of raw events: every bad row is kept with its reasons (never silently dropped)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.events.schema import DEVICES, ENGAGEMENT_TYPES, NULLABLE, SCHEMAS, STRATEGIES


@dataclass
class ValidationResult:
    good: pd.DataFrame
    bad: pd.DataFrame  # original columns + `_reasons` (";"-joined)

    @property
    def n_bad(self) -> int:
        return len(self.bad)


def _coerce(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Coerce columns to the contract's types; returns the frame and per-row reasons for failed coercions."""
    schema = SCHEMAS[table]
    out = pd.DataFrame(index=frame.index)
    reasons = pd.Series([""] * len(frame), index=frame.index, dtype=object)

    def add(mask: pd.Series, why: str) -> None:
        reasons[mask] = reasons[mask] + (why + ";")

    for field in schema:
        name = field.name
        if name not in frame.columns:
            if name in NULLABLE[table]:
                out[name] = None
                continue
            add(pd.Series(True, index=frame.index), f"missing column {name}")
            out[name] = None
            continue
        col = frame[name]
        t = str(field.type)
        if t.startswith("timestamp"):
            conv = pd.to_datetime(col, utc=True, errors="coerce")
            add(conv.isna() & col.notna(), f"{name}: not a timestamp")
            out[name] = conv
        elif t in ("double", "int32", "int64"):
            conv = pd.to_numeric(col, errors="coerce")
            add(conv.isna() & col.notna(), f"{name}: not a number")
            if t == "int32":
                frac = conv.notna() & (conv != np.floor(conv.fillna(0)))
                add(frac, f"{name}: not an integer")
            out[name] = conv
        elif t == "bool":
            conv = col.map(_as_bool)
            add(conv.isna() & col.notna(), f"{name}: not a boolean")
            out[name] = conv
        elif t.startswith("list"):
            out[name] = col.map(_as_list)
            add(out[name].isna() & col.notna(), f"{name}: not a list")
        else:
            out[name] = col.where(col.isna(), col.astype(str))
    for field in schema:
        if field.name not in NULLABLE[table]:
            add(out[field.name].isna(), f"{field.name}: required value is missing")
    return out, reasons


def _as_bool(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    return {"true": True, "1": True, "false": False, "0": False}.get(str(v).strip().lower())


def _as_list(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return list(v)
    if isinstance(v, str):
        s = v.strip().strip("[]")
        return [p.strip().strip("'\"") for p in s.replace("|", ",").split(",") if p.strip()]
    return None


def validate_frame(table: str, frame: pd.DataFrame) -> ValidationResult:
    """Check a frame against the raw event contract; split it into good rows and bad rows with reasons."""
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(SCHEMAS)}")
    out, reasons = _coerce(table, frame)

    def add(mask: pd.Series, why: str) -> None:
        mask = mask.fillna(False).astype(bool)
        reasons[mask] = reasons[mask] + (why + ";")

    if table == "decisions":
        p = out["propensity"]
        add(p.notna() & ((p <= 0) | (p > 1)), "propensity: outside (0, 1]")
        add(out["strategies"].map(lambda s: s is not None and any(x not in STRATEGIES for x in s)),
            "strategies: unknown strategy")
        add(out["strategies"].map(lambda s: s is not None and len(s) == 0), "strategies: empty")
    elif table == "engagements":
        add(out["type"].notna() & ~out["type"].isin(ENGAGEMENT_TYPES),
            f"type: not one of {', '.join(ENGAGEMENT_TYPES)}")
    elif table == "impressions":
        add(out["position"].notna() & (out["position"] < 1), "position: must be >= 1")
        add(out["strategy"].notna() & ~out["strategy"].isin(STRATEGIES), "strategy: unknown strategy")
    elif table == "requests":
        add(out["device"].notna() & ~out["device"].isin(DEVICES), f"device: not one of {', '.join(DEVICES)}")
        add(out["hour"].notna() & ((out["hour"] < 0) | (out["hour"] > 23)), "hour: outside 0..23")
        add(out["query"].notna() & (out["query"].str.strip() == ""), "query: empty")
    elif table == "catalog":
        add(out["price"].notna() & (out["price"] < 0), "price: negative")
        add(out["title"].notna() & (out["title"].str.strip() == ""), "title: empty")

    # Duplicates are judged among otherwise valid rows: a bad first copy must not condemn a good second one.
    ok = reasons == ""
    dup = ok & out["event_id"].where(ok).duplicated(keep="first") & out["event_id"].notna()
    add(dup, "event_id: duplicate within the batch")
    bad_mask = reasons != ""
    bad = frame.loc[bad_mask].copy()
    bad["_reasons"] = reasons[bad_mask].str.rstrip(";")
    good = out.loc[~bad_mask].reset_index(drop=True)
    for field in SCHEMAS[table]:
        if str(field.type) == "int32":
            good[field.name] = good[field.name].astype("int32")
    return ValidationResult(good=good, bad=bad.reset_index(drop=True))
