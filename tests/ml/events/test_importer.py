"""`ltrr import`: good rows land, bad rows are quarantined with reasons, counts add up, reimport is idempotent."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.events.importer import import_file
from ml.events.store import read_events


def _engagements_csv(tmp_path):
    rows = pd.DataFrame({
        "event_id": ["e1", "e2", "e3", "e3", "e5"],
        "request_id": ["r1", "r1", "r2", "r2", "r3"],
        "item_id": ["i1", "i2", "i3", "i3", "i4"],
        "ts": ["2026-01-01T10:00:00Z", "2026-01-02T11:00:00Z", "not-a-date", "2026-01-01T10:00:00Z",
               "2026-01-01T12:00:00Z"],
        "type": ["click", "purchase", "click", "click", "like"],
    })
    path = tmp_path / "eng.csv"
    rows.to_csv(path, index=False)
    return path


def test_import_quarantines_with_reasons(tmp_path):
    path = _engagements_csv(tmp_path)
    res = import_file(path, "engagements", tmp_path / "raw", tmp_path / "q")
    assert (res.rows_read, res.rows_written, res.rows_quarantined) == (5, 3, 2)
    bad = pd.read_csv(res.quarantine_file)
    reasons = dict(zip(bad["event_id"], bad["_reasons"]))
    assert "not a timestamp" in reasons["e3"]
    assert "type: not one of" in reasons["e5"]
    got = read_events(tmp_path / "raw", "engagements")
    assert sorted(got["event_id"]) == ["e1", "e2", "e3"]
    # the purchase a day later lands in its own day's partition
    assert sorted(p.name for p in (tmp_path / "raw" / "engagements").iterdir()) == ["dt=2026-01-01", "dt=2026-01-02"]


def test_reimport_is_idempotent(tmp_path):
    path = _engagements_csv(tmp_path)
    import_file(path, "engagements", tmp_path / "raw", tmp_path / "q")
    import_file(path, "engagements", tmp_path / "raw", tmp_path / "q")
    assert len(read_events(tmp_path / "raw", "engagements")) == 3


@pytest.mark.parametrize("table,columns,message", [
    ("nope", ["a"], "unknown table"),
    ("engagements", ["event_id", "surprise"], "not in the engagements contract"),
])
def test_bad_files_get_clear_errors(tmp_path, table, columns, message):
    path = tmp_path / "x.csv"
    pd.DataFrame({c: ["1"] for c in columns}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        import_file(path, table, tmp_path / "raw", tmp_path / "q")
    assert not (tmp_path / "raw").exists()
