"""Run the dbt project (raw events -> feature and label marts) for one data interval, in this process.

``build`` calls ``dbtRunner().invoke(["build", ...])`` with every path and the interval passed explicitly
(env vars for the profile and sources, ``--vars`` for the interval), and keeps dbt's target/ and logs/
beside the warehouse, never inside the repository. dbt's programmatic runner is not thread-safe: run one
build at a time per process.

On the ``postgres`` target (production profile) the build is wrapped by ``ml.warehouse``: the raw Parquet
partitions are mirrored into schema ``raw`` first (only changed partitions are re-copied), dbt builds the marts
as tables in the warehouse, and each mart is then exported to ``{marts_dir}/<mart>.parquet`` so every reader
downstream (validation, Feast, trainers, scorer) is the same code under both profiles.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from ml.environ import temporary_environ
from ml.events.schema import SCHEMAS, TABLES

MARTS: tuple[str, ...] = (
    "dim_items", "feat_query_daily", "feat_strategy_daily", "feat_item_daily", "feat_query_item_daily",
    "label_bandit", "label_ranker", "label_conversion",
)

_FAILED = {"error", "fail", "runtime error", "skipped"}
_PG_DEFAULTS = {"LTRR_PG_HOST": "127.0.0.1", "LTRR_PG_PORT": "5432", "LTRR_PG_USER": "postgres",
                "LTRR_PG_DBNAME": "ltrr_warehouse", "LTRR_PG_SCHEMA": "ltrr"}


class DbtBuildError(RuntimeError):
    """dbt build failed; ``failures`` holds (node, status, message) for every failing node."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]]):
        super().__init__(message)
        self.failures = failures


@dataclass
class ModelResult:
    name: str
    status: str
    seconds: float
    rows: int | None = None


@dataclass
class DbtBuildResult:
    target: str
    interval_end: datetime
    marts_dir: Path
    models: dict[str, ModelResult] = field(default_factory=dict)
    tests_passed: int = 0
    tests_warned: int = 0
    seconds: float = 0.0
    artifacts_dir: Path | None = None

    @property
    def row_counts(self) -> dict[str, int | None]:
        return {name: m.rows for name, m in self.models.items()}

    def mart_path(self, model: str) -> Path:
        return self.marts_dir / f"{model}.parquet"


def _utc_text(ts: datetime) -> str:
    """UTC wall-clock text for --vars (naive input is taken as UTC)."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f")


def _raw_overrides(raw_dir: Path, work_dir: Path) -> dict[str, str | None]:
    """Point a raw table with no Parquet file yet at an empty, typed placeholder (zero rows, outside raw_dir).

    DuckDB's read_parquet fails on a glob that matches nothing; the placeholder keeps the columns and types
    of the contract so staging compiles, and contributes no rows.
    """
    out: dict[str, str | None] = {}
    for table in TABLES:
        var = f"LTRR_RAW_{table.upper()}_GLOB"
        if any((Path(raw_dir) / table).glob("*/*.parquet")):
            out[var] = None
            continue
        placeholder = work_dir / "empty_raw" / table / "dt=1970-01-01" / "part-empty.parquet"
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(SCHEMAS[table].empty_table(), placeholder)
        out[var] = str(placeholder)
    return out


def _count_rows(marts_dir: Path, names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        path = marts_dir / f"{name}.parquet"
        if path.exists():
            counts[name] = pq.ParquetFile(path).metadata.num_rows
    return counts


def _pg_params(postgres_env: dict[str, str]):
    from ml.warehouse import PgParams

    env = {**_PG_DEFAULTS, **postgres_env}
    return PgParams(host=env["LTRR_PG_HOST"], port=int(env["LTRR_PG_PORT"]), user=env["LTRR_PG_USER"],
                    password=env.get("LTRR_PG_PASSWORD", ""), dbname=env["LTRR_PG_DBNAME"])


def build(project_dir: Path, *, target: str, raw_dir: Path, marts_dir: Path, warehouse_path: Path,
          interval_end: datetime, attribution_window_days: int = 7,
          postgres_env: dict[str, str] | None = None, select: list[str] | None = None) -> DbtBuildResult:
    """``dbt build`` the marts for the interval ending (exclusive) at ``interval_end``.

    Idempotent: the marts are rebuilt from the raw partitions with ``dt <= interval_end``, so running it
    twice for the same interval gives identical marts. Raises ``DbtBuildError`` naming every failing model
    or test. ``postgres_env`` (LTRR_PG_HOST/PORT/USER/PASSWORD/DBNAME/SCHEMA) configures the postgres target,
    whose sources are tables in schema ``raw`` (loaded here from ``raw_dir`` first, see ``ml.warehouse``).
    """
    from dbt.cli.main import dbtRunner

    if target not in ("duckdb", "postgres"):
        raise ValueError(f"unknown dbt target {target!r}; expected duckdb or postgres")
    project_dir = Path(project_dir).resolve()
    raw_dir, marts_dir = Path(raw_dir).resolve(), Path(marts_dir).resolve()
    warehouse_path = Path(warehouse_path).resolve()
    work_dir = warehouse_path.parent / "dbt" / target
    marts_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)

    env: dict[str, str | None] = {
        "LTRR_RAW_DIR": str(raw_dir), "LTRR_MARTS_DIR": str(marts_dir), "LTRR_WAREHOUSE_PATH": str(warehouse_path),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        **_raw_overrides(raw_dir, work_dir),
        **(postgres_env or {}),
    }
    variables = {"interval_end": _utc_text(interval_end), "attribution_window_days": int(attribution_window_days)}
    args = [
        "build", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--target", target,
        "--vars", json.dumps(variables), "--target-path", str(work_dir / "target"),
        "--log-path", str(work_dir / "logs"), "--no-partial-parse", "--no-use-colors", "--quiet",
        "--no-send-anonymous-usage-stats",
    ]
    if select:
        args += ["--select", *select]
    if target == "postgres":
        # dbt's guidance: unit tests belong to development and CI, not the production warehouse. Ours run on
        # every embedded (duckdb) build; their fixtures use DuckDB literals (['a', 'b'] lists) that Postgres
        # cannot parse. The data tests (not_null, unique, between, ...) still run on every production build.
        args += ["--exclude-resource-type", "unit_test"]

    started = time.perf_counter()
    pg = None
    if target == "postgres":
        from ml.warehouse import load_raw

        pg = _pg_params(dict(postgres_env or {}))
        last_day = (interval_end.astimezone(UTC) if interval_end.tzinfo else interval_end).date()
        load_raw(raw_dir, pg, last_day=last_day)
    with temporary_environ(env):
        res = dbtRunner().invoke(args)
    seconds = time.perf_counter() - started

    if res.exception is not None:
        raise DbtBuildError(f"dbt build did not run: {res.exception}", [("dbt", "exception", str(res.exception))])
    results = list(getattr(res.result, "results", None) or [])
    failures = [(r.node.unique_id, str(r.status), (r.message or "").strip()) for r in results
                if str(r.status) in _FAILED]
    if not res.success or failures:
        lines = "\n".join(f"  {node}: {status}: {msg}" for node, status, msg in failures) or "  (no node reported)"
        raise DbtBuildError(f"dbt build failed for interval_end={variables['interval_end']}:\n{lines}", failures)

    out = DbtBuildResult(target=target, interval_end=interval_end, marts_dir=marts_dir, seconds=seconds,
                         artifacts_dir=work_dir / "target")
    for r in results:
        rtype = r.node.resource_type
        if str(rtype).endswith("model"):
            out.models[r.node.name] = ModelResult(r.node.name, str(r.status), float(r.execution_time or 0.0))
        elif str(rtype).endswith("test") or str(rtype).endswith("unit_test"):
            if str(r.status) == "warn":
                out.tests_warned += 1
            else:
                out.tests_passed += 1
    marts_built = [m for m in MARTS if m in out.models]
    if pg is not None:
        from ml.warehouse import export_marts

        schema = {**_PG_DEFAULTS, **(postgres_env or {})}.get("LTRR_PG_SCHEMA", "ltrr")
        counts = export_marts(pg, schema, marts_built, marts_dir)
    else:
        counts = _count_rows(marts_dir, marts_built)
    for name, rows in counts.items():
        out.models[name].rows = rows
    return out
