"""Airflow's environment for this project, and running the DAG for one day.

Embedded profile: SQLite metadata, the default executor. Production profile (same DAG, same code): metadata in
PostgreSQL (database ``Settings.database("airflow")``) and a parallel executor, LocalExecutor by default or
CeleryExecutor with Redis as the broker (``LTRR_AIRFLOW_EXECUTOR``; see docs/production.md).
Airflow reads its configuration when first imported, so `configure()` must run before any airflow import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ml.settings import Settings

DAG_ID = "ltrr_nightly"


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for Airflow processes (and the LTRR_* settings its tasks read)."""
    home = settings.airflow_home
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "LTRR_HOME": str(settings.home),
        "LTRR_PROFILE": settings.profile,
        "LTRR_PROJECT_DIR": str(settings.repo_root),
        "PYTHONWARNINGS": "ignore",
    }
    if settings.profile == "production":
        # The tasks (in this process under dag.test(), in worker processes otherwise) rebuild Settings from
        # these; the DSN may carry a password: it only ever travels through the environment.
        env.update({
            "LTRR_PG_DSN": settings.postgres_dsn, "LTRR_REDIS_URL": settings.redis_url,
            "LTRR_DB_PREFIX": settings.db_prefix, "LTRR_DB_SUFFIX": settings.db_suffix,
            "LTRR_FEAST_PROJECT": settings.feast_project, "LTRR_AIRFLOW_EXECUTOR": settings.airflow_executor,
        })
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = settings.postgres_url("airflow", driver="psycopg2")
        # Airflow 3 also opens an async engine; its default driver for postgresql (asyncpg) is not installed,
        # psycopg 3 (already here for Feast) speaks async too.
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = settings.postgres_url("airflow", driver="psycopg")
        env["AIRFLOW__CORE__EXECUTOR"] = settings.airflow_executor
        if settings.airflow_executor == "CeleryExecutor":  # documented path, needs the celery provider
            env["AIRFLOW__CELERY__BROKER_URL"] = settings.redis_url
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + settings.postgres_url("airflow")
    else:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    return env


def configure(settings: Settings) -> dict[str, str]:
    """Set Airflow's environment in this process and make sure its metadata database is migrated."""
    import warnings

    env = airflow_env(settings)
    os.environ.update(env)
    # Airflow re-emits Python warnings as log lines; third-party deprecation notices are not the user's concern.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    if settings.profile != "production" and (settings.airflow_home / "airflow.db").exists():
        return env
    airflow_bin = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow_bin), "db", "migrate"], env={**os.environ, **env},
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        hint = ""
        if settings.profile == "production":
            hint = (f"\n(production profile: metadata database {settings.database('airflow')!r} on "
                    f"{settings.postgres_params()['host']}:{settings.postgres_params()['port']}; "
                    "create it with `ltrr infra setup` or infra/setup_services.py)")
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}{hint}")
    return env


def load_dag(settings: Settings, dag_id: str = DAG_ID):
    """Parse the project's DAG folder with Airflow's DagBag (nothing imports dags/ directly)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(settings.dags_dir))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise RuntimeError(f"DAG {dag_id!r} not found in {settings.dags_dir}")
    return dag


def run_day(settings: Settings, day: date, dag_id: str = DAG_ID) -> dict[str, Any]:
    """Run the real DAG for the data interval [day, day + 1) with `dag.test()`; returns states per task."""
    import logging

    dag = load_dag(settings, dag_id)
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    # dag.test() polls and warns "No tasks to run" while mapped tasks wait on upstream ones: noise, not news.
    logging.getLogger("airflow.sdk.definitions.dag").setLevel(logging.ERROR)
    # CronDataIntervalTimetable: a run at logical_date `end` covers the interval [end - 1 day, end).
    run = dag.test(logical_date=end)
    states: dict[str, str] = {}
    for ti in run.get_task_instances():
        key = ti.task_id if ti.map_index is None or ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state)
    return {"state": str(run.state), "tasks": states,
            "interval": [str(run.data_interval_start), str(run.data_interval_end)]}
