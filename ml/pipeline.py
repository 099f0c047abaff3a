"""The nightly pipeline's steps, one function per DAG task, every value an argument.

The DAG (dags/ltrr_nightly.py) and the CLI call these; each is a transaction keyed by the data interval
[start, end): re-running it for the same interval rewrites the same outputs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from ml.settings import Settings

log = logging.getLogger(__name__)


def validate_raw_step(settings: Settings, start: datetime, end: datetime) -> str:
    """Great Expectations gate on the interval's raw partitions; raises DataValidationError on failure."""
    from ml.validation import raise_for, validate_raw

    report = validate_raw(settings.raw_dir, start, end, settings.reports_dir)
    raise_for(report)
    return str(report.path)


def dbt_build_step(settings: Settings, end: datetime) -> dict[str, Any]:
    """`dbt build` of staging + marts for every raw partition before ``end`` (idempotent per interval)."""
    from ml.dbt_runner import build

    result = build(
        settings.dbt_project_dir,
        target="postgres" if settings.profile == "production" else "duckdb",
        raw_dir=settings.raw_dir,
        marts_dir=settings.marts_dir,
        warehouse_path=settings.warehouse_path,
        interval_end=end,
        attribution_window_days=settings.attribution_window_days,
        postgres_env=warehouse_env(settings) if settings.profile == "production" else None,
    )
    return _jsonable(result)


def warehouse_env(settings: Settings) -> dict[str, str]:
    """LTRR_PG_* for dbt's postgres target: the warehouse database of the production profile."""
    pg = settings.postgres_params()
    return {"LTRR_PG_HOST": pg["host"], "LTRR_PG_PORT": pg["port"], "LTRR_PG_USER": pg["user"],
            "LTRR_PG_PASSWORD": pg["password"], "LTRR_PG_DBNAME": settings.database("warehouse"),
            "LTRR_PG_SCHEMA": settings.warehouse_schema}


def validate_marts_step(settings: Settings, end: datetime) -> str:
    from ml.validation import raise_for, validate_marts

    report = validate_marts(settings.marts_dir, settings.reports_dir, end)
    raise_for(report)
    return str(report.path)


def feast_env(settings: Settings) -> dict[str, str]:
    from ml import feature_store

    if settings.profile == "production":  # SQL registry on PostgreSQL, Redis online store
        return feature_store.feast_env(feast_dir=settings.feast_dir, marts_dir=settings.marts_dir,
                                       registry_url=settings.postgres_url("feast", driver="psycopg"),
                                       redis_url=settings.redis_url, project=settings.feast_project)
    return feature_store.feast_env(feast_dir=settings.feast_dir, marts_dir=settings.marts_dir)


def feast_step(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """`feast apply`, then materialize the interval into the online store, in chunks (time windows, bounded
    batches: memory does not grow with the interval or the marts' history; see docs/scale.md)."""
    from ml import feature_store

    env = feast_env(settings)
    t0 = time.perf_counter()
    feature_store.apply(settings.feast_repo, env)
    rows = feature_store.materialize_chunked(settings.feast_repo, env, start, end)
    return {"seconds": round(time.perf_counter() - t0, 2), "rows_written": rows}


def train_step(settings: Settings, family: str, start: datetime, end: datetime,
               dry_run: bool = False) -> dict[str, Any]:
    """Train one family on its Feast training set, evaluate, gate against @champion, promote or refuse."""
    from ml.families.base import TrainContext
    from ml.registry import train_and_gate

    ctx = TrainContext(
        interval_start=start, interval_end=end, marts_dir=settings.marts_dir,
        feast_repo=settings.feast_repo, feast_env=feast_env(settings), params=model_inputs(settings, family),
    )
    decision = train_and_gate(
        family, ctx, tracking_uri=settings.tracking_uri, model_prefix=settings.model_prefix,
        reports_dir=settings.reports_dir, dry_run=dry_run, artifact_root=settings.artifacts_dir,
    )
    return _jsonable(decision)


# family -> the family whose @champion its training set reads (``model_inputs``). The DAG trains these families
# after the others have been gated, so they read tonight's champion (dags/ltrr_nightly.py).
READS_CHAMPION_OF: dict[str, str] = {"ranker": "conversion"}


def model_inputs(settings: Settings, family: str) -> dict[str, Any]:
    """Other families' champions a family's training set needs: the ranker's ``p_conversion`` feature is scored
    with the conversion @champion (the one serving will use; None before the first conversion model)."""
    source = READS_CHAMPION_OF.get(family)
    if source is None:
        return {}
    from ml.registry import load_champion

    champ = load_champion(settings.tracking_uri, source, settings.model_prefix)
    return {f"{source}_model": champ[1] if champ else None, f"{source}_version": champ[0] if champ else None}


def backfill_attributes_step(settings: Settings) -> dict[str, Any]:
    """Fill missing catalog attributes with the attributes @champion, with provenance, for serving and training."""
    from ml.backfill import backfill_step

    return _jsonable(backfill_step(settings.marts_dir, settings.tracking_uri, settings.model_prefix))


def notify_scorer_step(settings: Settings, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """Tell a running scorer to reload its champions (when one is configured); always write a marker file
    that in-process scorers (the demo) and operators can read."""
    marker = settings.reports_dir / "last_promotion.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    payload = {"decisions": [d for d in decisions if d]}
    marker.write_text(json.dumps(payload, indent=2, default=str))
    result: dict[str, Any] = {"marker": str(marker), "reloaded": False}
    if settings.scorer_url:
        import httpx

        resp = httpx.post(f"{settings.scorer_url.rstrip('/')}/admin/reload",
                          headers={"Authorization": f"Bearer {settings.admin_token}"}, timeout=60)
        resp.raise_for_status()
        result.update(reloaded=True, models=resp.json())
    return result


def _jsonable(obj: Any) -> Any:
    """Plain JSON for XCom: dataclasses as dicts, non-finite floats (NaN metrics) as null."""
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    if hasattr(obj, "__dataclass_fields__"):
        obj = asdict(obj)
    return clean(json.loads(json.dumps(obj, default=str)))
