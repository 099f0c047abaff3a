"""GX gates on the factory data: clean data passes, each kind of corruption fails and is named."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml.dbt_runner import build
from ml.events.store import write_events
from ml.validation import DataValidationError, raise_for, validate_marts, validate_raw
from tests.factories import INTERVAL_END, INTERVAL_START, sample_frames, write_sample_events

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"


def _validate(tmp_path: Path):
    return validate_raw(tmp_path / "raw", INTERVAL_START, INTERVAL_END, tmp_path / "reports")


def test_clean_raw_passes_and_writes_reports(tmp_path):
    write_sample_events(tmp_path / "raw")
    report = _validate(tmp_path)
    assert report.success, report.failures
    assert report.path.name == "raw-20240301T000000_20240303T000000.json"
    payload = json.loads(report.path.read_text())
    assert payload["success"] is True and payload["results"]
    assert "PASSED" in report.summary_path.read_text()
    raise_for(report)  # no-op


def _corrupt_propensity(value):
    def apply(frames):
        frames["decisions"].loc[1, "propensity"] = value
    return apply


def _duplicate_event_id(frames):
    frames["engagements"].loc[1, "event_id"] = frames["engagements"].loc[0, "event_id"]


@pytest.mark.parametrize("corrupt, table, column", [
    (_corrupt_propensity(0.0), "decisions", "propensity"),
    (_corrupt_propensity(1.5), "decisions", "propensity"),
    (_duplicate_event_id, "engagements", "event_id"),
])
def test_corrupt_values_fail(tmp_path, corrupt, table, column):
    frames = sample_frames()
    corrupt(frames)
    for t, frame in frames.items():
        write_events(tmp_path / "raw", t, frame, "factory")
    report = _validate(tmp_path)
    assert not report.success
    assert any(f.startswith(f"{table}:") and column in f for f in report.failures), report.failures
    assert len(report.failures) == 1, report.failures
    with pytest.raises(DataValidationError, match=str(report.path)):
        raise_for(report)
    assert column in report.summary_path.read_text()


def test_timestamp_outside_interval_fails(tmp_path):
    write_sample_events(tmp_path / "raw")
    late = sample_frames()["requests"].iloc[[0]].copy()
    late["event_id"] = late["request_id"] = "r-late"
    late["ts"] = pd.Timestamp("2024-03-05 12:00", tz="UTC")  # mis-partitioned into dt=2024-03-02
    from ml.events.store import to_arrow
    pq.write_table(to_arrow("requests", late), tmp_path / "raw" / "requests" / "dt=2024-03-02" / "part-late.parquet")
    report = _validate(tmp_path)
    assert not report.success
    assert any(f.startswith("requests:") and "(ts)" in f and "2024-03-05" in f for f in report.failures), \
        report.failures


def test_missing_column_fails(tmp_path):
    write_sample_events(tmp_path / "raw")
    for f in (tmp_path / "raw" / "impressions").glob("*/*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns(["position"]), f)
    report = _validate(tmp_path)
    assert not report.success
    assert any("impressions: expect_column_to_exist(position)" in f for f in report.failures), report.failures


def test_no_traffic_fails_but_no_engagements_is_fine(tmp_path):
    frames = sample_frames()
    for t, frame in frames.items():
        if t not in ("impressions", "engagements"):
            write_events(tmp_path / "raw", t, frame, "factory")
    report = _validate(tmp_path)
    assert report.failures == ["impressions: no traffic in the interval (0 rows in 2024-03-01..2024-03-02)"]


@pytest.fixture(scope="module")
def marts_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("marts")
    write_sample_events(home / "raw")
    build(PROJECT, target="duckdb", raw_dir=home / "raw", marts_dir=home / "marts",
          warehouse_path=home / "warehouse.duckdb", interval_end=INTERVAL_END)
    return home


def test_marts_pass_after_build(marts_home):
    report = validate_marts(marts_home / "marts", marts_home / "reports", INTERVAL_END)
    assert report.success, report.failures
    assert report.path.name == "marts-20240303T000000.json"


def test_bad_marts_fail(marts_home, tmp_path):
    bad = tmp_path / "marts"
    bad.mkdir()
    for f in (marts_home / "marts").glob("*.parquet"):
        (bad / f.name).write_bytes(f.read_bytes())
    ranker = pd.read_parquet(bad / "label_ranker.parquet")
    ranker.loc[0, "label"] = 5
    ranker.to_parquet(bad / "label_ranker.parquet")
    strategy = pd.read_parquet(bad / "feat_strategy_daily.parquet")
    strategy = pd.concat([strategy, strategy.iloc[[0]]])  # duplicate (strategy, event_timestamp)
    strategy.to_parquet(bad / "feat_strategy_daily.parquet")
    conv = pd.read_parquet(bad / "label_conversion.parquet").iloc[0:0]
    conv.to_parquet(bad / "label_conversion.parquet")
    report = validate_marts(bad, tmp_path / "reports", INTERVAL_END)
    assert not report.success
    assert any(f.startswith("label_ranker:") and "(label)" in f and "[5]" in f for f in report.failures)
    assert any(f.startswith("feat_strategy_daily:") and "expect_compound_columns_to_be_unique" in f
               for f in report.failures)
    assert "label_conversion: no rows (label marts must not be empty)" in report.failures
    # an earlier interval_end: every feature row is now "from the future"
    early = validate_marts(marts_home / "marts", tmp_path / "reports", INTERVAL_START)
    assert any("feat_item_daily:" in f and "(event_timestamp)" in f for f in early.failures)
