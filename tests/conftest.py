"""Test-wide setup: Airflow must be pointed at a throwaway home before anything imports it."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="ltrr-test-"))


def pytest_configure(config):
    # Airflow reads its configuration on first import: set it before collection imports anything.
    os.environ.setdefault("LTRR_HOME", str(_SESSION_HOME / "home"))
    os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "home" / "airflow")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_HOME / 'home' / 'airflow' / 'airflow.db'}"
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore")
    for name in ("great_expectations", "mlflow", "feast", "alembic", "dbt"):
        logging.getLogger(name).setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME
