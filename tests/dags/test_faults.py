"""Fault injection in the nightly DAG (real Airflow `dag.test()`, embedded profile).

One prepared state is shared: day 1 served and closed by the DAG (champions exist), day 2 served into the raw
store but not yet closed. Each test injects one fault into day 2, runs the DAG for day 2 and checks that the run
either fails at validation with a report that names the fault, or recovers on retry; that a failed run changes
no mart and promotes nothing; that a successful rerun of the interval gives the same tables as a fresh build,
with no duplicate keys. Validation faults restore day 2's raw files afterwards, so the order does not matter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml.settings import FAMILIES, Settings

pytestmark = pytest.mark.integration

DAY1 = date(2026, 1, 1)
DAY2 = DAY1 + timedelta(days=1)
END2 = datetime(2026, 1, 3, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ state


@pytest.fixture(scope="module")
def state(session_home):
    """Day 1 closed by the DAG; day 2 served (requests, decisions, impressions, engagements) but not closed."""
    from ltrr.demo import _Clock, _impressions_of, run_demo, serve_day
    from ml.events.store import write_events
    from ml.sim import SimConfig, Simulator
    from serving.scorer import Scorer

    settings = Settings(home=session_home / "faults")
    rows = run_demo(settings, days=1, requests_per_day=250, n_items=300, seed=5, start=DAY1)
    assert rows[0].dag_state == "success"
    sim = Simulator(SimConfig(seed=5, n_items=300, requests_per_day=250, start=DAY1))
    sim.catalog_events(DAY1)  # the simulator's catalog evolves day by day, as in the demo
    write_events(settings.raw_dir, "catalog", sim.catalog_events(DAY2), batch_id=f"sim-{DAY2}")
    clock = _Clock()
    scorer = Scorer(settings, feast_repo=settings.feast_repo, clock=clock, rng_seed=5)
    scorer.load()
    reqs, _, _ = serve_day(scorer, sim, DAY2, clock)
    engagements = sim.respond(reqs, _impressions_of(settings, DAY2))
    due = engagements[pd.to_datetime(engagements["ts"], utc=True) < pd.Timestamp(END2)]
    write_events(settings.raw_dir, "engagements", due, batch_id=f"sim-{DAY2}")
    pristine = settings.home.parent / "faults-raw-day2"
    shutil.rmtree(pristine, ignore_errors=True)
    for table_dir in settings.raw_dir.iterdir():
        src = table_dir / f"dt={DAY2.isoformat()}"
        if src.exists():
            shutil.copytree(src, pristine / table_dir.name)
    return settings, pristine


@pytest.fixture
def day2(state):
    """The shared state; day 2's raw partitions are restored to their pristine files after the test."""
    settings, pristine = state
    yield settings
    for table_dir in pristine.iterdir():
        dst = settings.raw_dir / table_dir.name / f"dt={DAY2.isoformat()}"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(table_dir, dst)


def _partition(settings: Settings, table: str, day: date = DAY2) -> Path:
    return settings.raw_dir / table / f"dt={day.isoformat()}"


def _registry(settings: Settings) -> dict[str, tuple[str | None, int]]:
    """family -> (@champion version, number of registered versions): a promotion or a new version shows."""
    import mlflow

    from ml.registry import champion_versions

    champions = champion_versions(settings.tracking_uri, settings.model_prefix)
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    out = {}
    for fam in FAMILIES:
        versions = client.search_model_versions(f"name='{settings.model_prefix}{fam}'")
        out[fam] = (champions[fam], len(versions))
    return out


def _marts_digest(settings: Settings) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(settings.marts_dir.glob("*.parquet"))}


def _fails_at_validation(settings: Settings, *needles: str) -> str:
    """Run day 2; it must fail at validate_raw, promote nothing, change no mart; returns the report text."""
    from ltrr.airflow_env import run_day

    registry, marts = _registry(settings), _marts_digest(settings)
    result = run_day(settings, DAY2)
    assert result["state"] == "failed", result
    assert result["tasks"]["validate_raw"] == "failed", result["tasks"]
    assert all(s != "success" for t, s in result["tasks"].items() if t != "validate_raw"), result["tasks"]
    assert _registry(settings) == registry, "a failed run must not register or promote anything"
    assert _marts_digest(settings) == marts, "a failed run must not touch the marts"
    report = settings.reports_dir / "validation" / "raw-20260102T000000_20260103T000000.md"
    text = report.read_text()
    assert "FAILED" in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in the report:\n{text}"
    return text


def _assert_marts_equal_fresh_build(settings: Settings, scratch: Path) -> None:
    """The marts the DAG left equal a fresh dbt build of the same raw data and interval; keys are unique."""
    from ml.dbt_runner import MARTS, build
    from ml.validation import MART_KEYS

    build(settings.dbt_project_dir, target="duckdb", raw_dir=settings.raw_dir, marts_dir=scratch / "marts",
          warehouse_path=scratch / "warehouse.duckdb", interval_end=END2,
          attribution_window_days=settings.attribution_window_days)
    for m in MARTS:
        got = pd.read_parquet(settings.marts_dir / f"{m}.parquet")
        assert not got.duplicated(list(MART_KEYS[m])).any(), f"duplicate keys in {m}"
        pd.testing.assert_frame_equal(got, pd.read_parquet(scratch / "marts" / f"{m}.parquet"), obj=m)


# ------------------------------------------------------------------------------------------------ faults


def test_missing_partition_fails_at_validation(day2):
    shutil.rmtree(_partition(day2, "impressions"))
    _fails_at_validation(day2, "impressions: no traffic in the interval")


def test_duplicate_events_fail_at_validation(day2):
    part = _partition(day2, "decisions")
    src = min(part.glob("part-*.parquet"))
    shutil.copy(src, part / "part-redelivered.parquet")  # the same batch delivered twice
    _fails_at_validation(day2, "decisions: expect_column_values_to_be_unique(event_id) failed")


def test_schema_drift_fails_at_validation(day2):
    part = _partition(day2, "decisions")
    src = min(part.glob("part-*.parquet"))
    tbl = pq.read_table(src)
    i = tbl.schema.get_field_index("propensity")
    drifted = tbl.set_column(i, "propensity", pa.array([str(v) for v in tbl.column(i).to_pylist()]))
    drifted = drifted.append_column("experiment_arm", pa.array(["b"] * tbl.num_rows))
    pq.write_table(drifted, src)
    _fails_at_validation(day2, "column 'propensity' is string, the contract says double",
                         "column 'experiment_arm' (string) is not in the contract")


def test_propensity_out_of_range_fails_at_validation(day2):
    part = _partition(day2, "decisions")
    src = min(part.glob("part-*.parquet"))
    frame = pq.read_table(src).to_pandas()
    frame.loc[frame.index[:3], "propensity"] = [0.0, -0.2, 1.5]  # zero, negative, above one
    pq.write_table(pa.Table.from_pandas(frame, schema=pq.read_schema(src), preserve_index=False), src)
    text = _fails_at_validation(day2, "expect_column_values_to_be_between(propensity) failed", "3 unexpected")
    assert all(v in text for v in ("0.0", "-0.2", "1.5")), text


def test_task_killed_midway_recovers_on_retry(day2, tmp_path):
    """SIGKILL the whole `ltrr run-day` process while dbt_build runs (a worker lost mid-task): nothing is
    promoted; the retry of the interval succeeds and leaves the same tables as a fresh build."""
    from ltrr.airflow_env import run_day

    registry = _registry(day2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["LTRR_HOME"] = str(day2.home)
    airflow_db = day2.airflow_home / "airflow.db"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ltrr")), "run-day", DAY2.isoformat()],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    killed_in = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if airflow_db.exists():
                with sqlite3.connect(airflow_db, timeout=5) as conn:
                    row = conn.execute("select ti.state from task_instance ti join dag_run dr on "
                                       "ti.dag_id = dr.dag_id and ti.run_id = dr.run_id where "
                                       "ti.task_id = 'dbt_build' and dr.state = 'running'").fetchone()
                if row and row[0] == "running":
                    time.sleep(3)  # let dbt get going: tables half rebuilt, files half rewritten
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_in = "dbt_build"
                    break
            time.sleep(0.3)
    finally:
        if proc.poll() is None and killed_in is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert killed_in == "dbt_build", f"dbt_build never observed running (exit {proc.returncode})"
    assert _registry(day2) == registry, "a killed run must not promote anything"

    result = run_day(day2, DAY2)  # Airflow's retry of the interval
    assert result["state"] == "success", result
    assert not list(day2.marts_dir.glob(".*.tmp")) and not list(day2.marts_dir.glob("*.tmp"))
    _assert_marts_equal_fresh_build(day2, tmp_path)


def test_late_purchase_is_picked_up_by_the_rerun(day2, tmp_path):
    """A purchase that arrives after day 2 was closed, for an impression of day 2, lands in day 2's partition;
    rerunning day 2 turns that impression's label into a purchase, with no duplicate row."""
    from ltrr.airflow_env import run_day
    from ml.events.store import write_events

    ranker = pd.read_parquet(day2.marts_dir / "label_ranker.parquet")
    if ranker["event_timestamp"].max() < pd.Timestamp(DAY2, tz="UTC"):  # day 2 not closed yet: close it
        assert run_day(day2, DAY2)["state"] == "success"
        ranker = pd.read_parquet(day2.marts_dir / "label_ranker.parquet")
    day2_rows = ranker[(ranker["event_timestamp"] >= pd.Timestamp(DAY2, tz="UTC")) & (ranker["label"] == 0)]
    target = day2_rows.iloc[0]
    late = pd.DataFrame([{
        "event_id": f"late-purchase-{target.request_id}", "request_id": target.request_id,
        "item_id": target.item_id, "type": "purchase",
        "ts": min(pd.Timestamp(target.event_timestamp) + pd.Timedelta(hours=1),
                  pd.Timestamp(END2) - pd.Timedelta(seconds=1)),
    }])
    write_events(day2.raw_dir, "engagements", late, batch_id="late-arrival")

    result = run_day(day2, DAY2)
    assert result["state"] == "success", result
    after = pd.read_parquet(day2.marts_dir / "label_ranker.parquet")
    pair = after[(after["request_id"] == target.request_id) & (after["item_id"] == target.item_id)]
    assert len(pair) == 1 and int(pair["label"].iloc[0]) == 3
    assert len(after) == len(ranker)  # a label changed; no row appeared or vanished
    bandit = pd.read_parquet(day2.marts_dir / "label_bandit.parquet").set_index("request_id")
    assert bandit.loc[target.request_id, "reward"] >= 2
    _assert_marts_equal_fresh_build(day2, tmp_path)
