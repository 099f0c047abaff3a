"""Airflow's environment for this project (SQLite metadata by default), and running the DAG for one day.

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
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = settings.postgres_dsn.replace(
            "postgresql://", "postgresql+psycopg2://").rsplit("/", 1)[0] + "/ltrr_airflow"
        env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
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
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
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
