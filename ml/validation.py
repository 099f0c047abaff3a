"""Great Expectations gates around dbt: ``validate_raw`` before the build, ``validate_marts`` after it.

Each gate runs one GX 1.x suite per table (ephemeral context, pandas dataframe asset, ValidationDefinition),
writes ``{reports_dir}/validation/<stage>-<interval>.json`` and a short ``.md`` summary naming every failed
expectation, its column and the observed value / unexpected examples, and returns a ``ValidationReport``.
``raise_for(report)`` turns a failed report into ``DataValidationError`` (the DAG stops, the champion stays).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from ml.events.schema import ENGAGEMENT_TYPES, NULLABLE, PARTITION_TS, SCHEMAS, TABLES
from ml.events.store import read_events

TRAFFIC_TABLES: tuple[str, ...] = ("requests", "decisions", "impressions")  # empty in the interval = failure

# mart -> key columns (unique together, never null)
MART_KEYS: dict[str, tuple[str, ...]] = {
    "dim_items": ("item_id",),
    "feat_query_daily": ("query_norm", "event_timestamp"),
    "feat_strategy_daily": ("strategy", "event_timestamp"),
    "feat_item_daily": ("item_id", "event_timestamp"),
    "feat_query_item_daily": ("query_norm", "item_id", "event_timestamp"),
    "label_bandit": ("request_id",),
    "label_ranker": ("request_id", "item_id"),
    "label_conversion": ("request_id", "item_id"),
}
LABEL_MARTS: tuple[str, ...] = ("label_bandit", "label_ranker", "label_conversion")
_EXAMPLES = 5


class DataValidationError(RuntimeError):
    """A validation gate failed; the message lists the failures and the report path."""


@dataclass
class ValidationReport:
    stage: str
    success: bool
    failures: list[str]
    path: Path  # the JSON report; the markdown summary is beside it (.md)
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary_path(self) -> Path:
        return self.path.with_suffix(".md")


def raise_for(report: ValidationReport) -> None:
    """Raise ``DataValidationError`` when the report failed; no-op when it passed."""
    if report.success:
        return
    listing = "\n".join(f"  - {f}" for f in report.failures)
    raise DataValidationError(
        f"{report.stage} validation failed ({len(report.failures)} failure(s)):\n{listing}\nreport: {report.path}"
    )


# ---------------------------------------------------------------- GX plumbing

def _quiet_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    for name in list(logging.root.manager.loggerDict):
        if name == "great_expectations" or name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _utc(ts: datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if hasattr(v, "item"):
        try:
            return v.item()
        except (ValueError, TypeError):
            pass
    return str(v)


class _Runner:
    """One ephemeral GX context; ``run(name, frame, expectations)`` validates a frame against a suite."""

    def __init__(self, stage: str):
        import great_expectations as gx

        _quiet_gx()
        self._gx = gx
        self.stage = stage
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.source = self.context.data_sources.add_pandas(name=f"ltrr_{stage}")
        _quiet_gx()

    def run(self, name: str, frame: pd.DataFrame, expectations: list) -> list[dict[str, Any]]:
        gx = self._gx
        asset = self.source.add_dataframe_asset(name=name)
        batch = asset.add_batch_definition_whole_dataframe(f"{name}_whole")
        suite = self.context.suites.add(gx.ExpectationSuite(name=f"{self.stage}_{name}"))
        for exp in expectations:
            suite.add_expectation(exp)
        vd = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{self.stage}_{name}_vd", data=batch, suite=suite))
        result = vd.run(batch_parameters={"dataframe": frame},
                        result_format={"result_format": "SUMMARY", "partial_unexpected_count": _EXAMPLES})
        rows = []
        for r in result.results:
            cfg = r.expectation_config
            kwargs = dict(cfg.kwargs)
            res = dict(r.result or {})
            exc = (r.exception_info or {}) if hasattr(r, "exception_info") else {}
            raised = bool(exc.get("raised_exception")) if isinstance(exc, dict) else False
            rows.append(_jsonable({
                "table": name,
                "expectation": cfg.type,
                "column": kwargs.get("column") or kwargs.get("column_list") or kwargs.get("column_set"),
                "kwargs": {k: v for k, v in kwargs.items() if k not in ("batch_id",)},
                "success": bool(r.success),
                "observed_value": res.get("observed_value"),
                "unexpected_count": res.get("unexpected_count"),
                "unexpected_examples": (res.get("partial_unexpected_list") or [])[:_EXAMPLES],
                "exception": exc.get("exception_message") if raised else None,
            }))
        return rows


def _describe(row: dict[str, Any]) -> str:
    col = row["column"]
    col_txt = f"({', '.join(col) if isinstance(col, list) else col})" if col else ""
    extra = {k: v for k, v in row["kwargs"].items() if k not in ("column", "column_list", "column_set")}
    parts = [f"{row['table']}: {row['expectation']}{col_txt} failed"]
    if extra:
        parts.append(f"expected {extra}")
    if row.get("unexpected_count"):
        parts.append(f"{row['unexpected_count']} unexpected, e.g. {row['unexpected_examples']}")
    elif row.get("observed_value") is not None:
        parts.append(f"observed {row['observed_value']}")
    if row.get("exception"):
        parts.append(f"error: {row['exception']}")
    return "; ".join(parts)


def _write_report(reports_dir: Path, stage: str, tag: str, results: list[dict[str, Any]],
                  failures: list[str], meta: dict[str, Any]) -> Path:
    out_dir = Path(reports_dir) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stage}-{tag}.json"
    success = not failures
    payload = {"stage": stage, "success": success, **meta, "failures": failures, "results": results}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)

    lines = [f"# {stage} validation {tag}: {'PASSED' if success else 'FAILED'}", ""]
    for k, v in meta.items():
        lines.append(f"- {k}: {v}")
    tables: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        tables.setdefault(r["table"], []).append(r)
    lines += ["", "| table | expectations | failed |", "|---|---|---|"]
    for t, rows in tables.items():
        lines.append(f"| {t} | {len(rows)} | {sum(not r['success'] for r in rows)} |")
    if failures:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- raw gate

def _days(start: datetime, end: datetime) -> list[date]:
    s, e = _utc(start), _utc(end)
    day, last = s.date(), (e - pd.Timedelta(microseconds=1)).date()
    out = []
    while day <= last:
        out.append(day)
        day += timedelta(days=1)
    return out


def _raw_expectations(table: str, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> list:
    import great_expectations.expectations as gxe

    schema = SCHEMAS[table]
    exps: list = [gxe.ExpectColumnToExist(column=f.name) for f in schema]
    present = set(frame.columns)
    if table in TRAFFIC_TABLES:
        exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    for f in schema:
        if f.name in present and f.name not in NULLABLE[table]:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f.name))
    if "event_id" in present:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column="event_id"))
    ts_col = PARTITION_TS[table]
    if ts_col in present:
        if table == "catalog":
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=ts_col, max_value=end.to_pydatetime(),
                                                          strict_max=True))
        else:
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=ts_col, min_value=start.to_pydatetime(),
                                                          max_value=end.to_pydatetime(), strict_max=True))
    if table == "decisions" and "propensity" in present:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="propensity", min_value=0, max_value=1,
                                                      strict_min=True))
    if table == "engagements" and "type" in present:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="type", value_set=list(ENGAGEMENT_TYPES)))
    if table == "impressions" and "position" in present:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="position", min_value=1))
    return exps


def _kind(t) -> str:
    """Coarse Arrow type family: a producer writing int64 for an int32 column is not drift, string for a
    float is."""
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_kind(t.value_type)}>"
    if pa.types.is_timestamp(t):
        return "timestamp" + ("[UTC]" if t.tz else "[naive]")
    for name, test in (("string", pa.types.is_string), ("string", pa.types.is_large_string),
                       ("integer", pa.types.is_integer), ("floating", pa.types.is_floating),
                       ("boolean", pa.types.is_boolean), ("null", pa.types.is_null)):
        if test(t):
            return name
    return str(t)


def schema_drift(raw_dir: Path, table: str, days: list[date]) -> list[str]:
    """Every file of the table's partitions for ``days`` whose columns differ from the contract: a column of
    another type family, or a column the contract does not know. (A missing column is reported by the GX
    suite's expect_column_to_exist.) An all-null column (Arrow type null) is accepted for nullable columns."""
    contract = {f.name: f.type for f in SCHEMAS[table]}
    out: list[str] = []
    for day in days:
        folder = Path(raw_dir) / table / f"dt={day.isoformat()}"
        for f in sorted(folder.glob("part-*.parquet")):
            try:
                schema = pq.read_schema(f)
            except Exception as exc:  # noqa: BLE001 - a truncated/corrupt file is a validation failure
                out.append(f"{table}: unreadable file {f.parent.name}/{f.name}: {exc}")
                continue
            for field_ in schema:
                name = field_.name
                if name not in contract:
                    out.append(f"{table}: schema drift in {f.parent.name}/{f.name}: column {name!r} "
                               f"({field_.type}) is not in the contract")
                    continue
                got, want = _kind(field_.type), _kind(contract[name])
                if got != want and not (got == "null" and name in NULLABLE[table]):
                    out.append(f"{table}: schema drift in {f.parent.name}/{f.name}: column {name!r} is "
                               f"{field_.type}, the contract says {contract[name]}")
    return out


def validate_raw(raw_dir: Path, interval_start: datetime, interval_end: datetime,
                 reports_dir: Path) -> ValidationReport:
    """Validate the raw partitions of the days in [interval_start, interval_end) against the event contract.

    Per table: no file drifts from the contract's column types or adds unknown columns (``schema_drift``),
    every contract column exists, required columns are not null, event_id is unique, the
    partition timestamp lies in the interval (catalog: created_at < interval_end), decisions' propensity in
    (0, 1], engagement type in the allowed set, impression position >= 1. requests/decisions/impressions
    with no row in the interval fail ("no traffic in the interval"); engagements and catalog may be empty.
    """
    start, end = _utc(interval_start), _utc(interval_end)
    days = _days(start, end)
    runner = _Runner("raw")
    results: list[dict[str, Any]] = []
    failures = []
    for table in TABLES:
        drift = schema_drift(raw_dir, table, days)
        if drift:  # the files cannot be read as one frame reliably: report the drift itself, file by file
            failures += drift
            continue
        frame = (read_events(raw_dir, table, days[0], days[-1], as_written=True) if days
                 else SCHEMAS[table].empty_table().to_pandas())
        results += runner.run(table, frame, _raw_expectations(table, frame, start, end))
    for r in results:
        if r["success"]:
            continue
        if r["expectation"] == "expect_table_row_count_to_be_between":
            failures.append(f"{r['table']}: no traffic in the interval (0 rows in {days[0]}..{days[-1]})")
        else:
            failures.append(_describe(r))
    tag = f"{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}"
    meta = {"raw_dir": str(raw_dir), "interval_start": start.isoformat(), "interval_end": end.isoformat(),
            "days": [d.isoformat() for d in days]}
    path = _write_report(reports_dir, "raw", tag, results, failures, meta)
    return ValidationReport("raw", not failures, failures, path, results)


# ---------------------------------------------------------------- marts gate

def _mart_expectations(mart: str, frame: pd.DataFrame, end: pd.Timestamp) -> list:
    import great_expectations.expectations as gxe

    keys = list(MART_KEYS[mart])
    exps: list = [gxe.ExpectColumnToExist(column=k) for k in keys]
    if mart in LABEL_MARTS:
        exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=1))
    present = set(frame.columns)
    for k in keys:
        if k in present:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=k))
    if set(keys) <= present:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=keys) if len(keys) > 1
                    else gxe.ExpectColumnValuesToBeUnique(column=keys[0]))
    for col in ("event_timestamp", "created_at"):
        if col in present:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=col, max_value=end.to_pydatetime(),
                                                          strict_max=True))
    for col in present:
        if col.endswith(("_ctr", "_rate")) or col.startswith("q_rate_"):
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0, max_value=1))
    if "label" in present:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1, 2, 3]))
    if "reward" in present:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="reward", min_value=0, max_value=4))
    if "propensity" in present:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="propensity", min_value=0, max_value=1,
                                                      strict_min=True))
    for col in ("has_atc", "converted_observed", "matured"):
        if col in present:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[0, 1]))
    return exps


def validate_marts(marts_dir: Path, reports_dir: Path, interval_end: datetime) -> ValidationReport:
    """Validate the marts built for the interval ending (exclusive) at ``interval_end``.

    Keys not null and unique (per entity and event_timestamp for feature marts), rates in [0, 1], ranker
    labels in {0, 1, 2, 3}, bandit reward in [0, 4], propensity in (0, 1], no event_timestamp (or dim_items
    created_at) at or after interval_end, and at least one row in every label mart. A missing mart fails.
    """
    end = _utc(interval_end)
    runner = _Runner("marts")
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for mart in MART_KEYS:
        path = Path(marts_dir) / f"{mart}.parquet"
        if not path.exists():
            failures.append(f"{mart}: mart file missing ({path})")
            continue
        frame = pq.read_table(path).to_pandas()
        rows = runner.run(mart, frame, _mart_expectations(mart, frame, end))
        results += rows
        for r in rows:
            if not r["success"]:
                failures.append(f"{mart}: no rows (label marts must not be empty)"
                                if r["expectation"] == "expect_table_row_count_to_be_between" else _describe(r))
    tag = f"{end:%Y%m%dT%H%M%S}"
    meta = {"marts_dir": str(marts_dir), "interval_end": end.isoformat()}
    path = _write_report(reports_dir, "marts", tag, results, failures, meta)
    return ValidationReport("marts", not failures, failures, path, results)

