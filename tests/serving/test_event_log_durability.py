"""The event log loses nothing when the scorer is killed mid-write: a writer process is SIGKILLed while appending
(and compacting), several times over; after recovery every acknowledged event is in the Parquet log exactly
once, complete and valid, and no partial record is ever read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from ml.events.store import read_events
from ml.events.validate import validate_frame
from serving.event_log import EventLog, decode_segment, encode_record

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
PER_REQUEST = 30   # impressions per request: a large append, so kills land inside writes too

WRITER = textwrap.dedent("""
    import sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    import numpy as np
    from serving.event_log import EventLog

    raw, round_, per = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    log = EventLog(raw, flush_every=97)        # odd size: flushes (compaction) interleave with appends
    log.recover()                              # as the app's lifespan does on start
    t0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
    i = 0
    while True:
        rid = f"{round_}-{i}"
        ts = t0 + timedelta(hours=i % 48)      # two day partitions
        log.append("requests", [{"event_id": rid, "request_id": rid, "ts": ts, "user_id": "u", "session_id": None,
                                 "query": "q " + rid, "device": "mobile", "locale": None, "hour": ts.hour}])
        log.append("impressions", [
            {"event_id": f"{rid}:{j}", "request_id": rid, "ts": ts, "item_id": np.str_(f"i{j}"), "position": j + 1,
             "strategy": "lexical", "retrieval_score": np.float64(j / 7), "lexical_score": 0.5,
             "semantic_score": None, "memory_score": 0.0, "popularity_score": 0.1, "rank_score": float(-j),
             "position_randomized": np.bool_(j % 2 == 0)}
            for j in range(per)])
        print(rid, flush=True)                 # acknowledged: both appends returned
        i += 1
""")


def _kill_midway(raw: Path, script: Path, round_: str, after_acks: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(raw), round_, str(PER_REQUEST)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    acks: list[str] = []
    try:
        for line in proc.stdout:
            acks.append(line.decode().strip())
            if len(acks) >= after_acks:
                os.kill(proc.pid, signal.SIGKILL)
                break
        else:
            pytest.fail(f"writer exited early: {proc.stderr.read().decode()[-2000:]}")
        acks += [ln.decode().strip() for ln in proc.stdout]   # acks printed before it died
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return [a for a in acks if a]


def test_sigkill_mid_write_loses_no_acknowledged_event(tmp_path):
    raw = tmp_path / "raw"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    acked: list[str] = []
    for round_, n in (("a", 150), ("b", 333), ("c", 71)):
        acked += _kill_midway(raw, script, round_, n)
    assert len(acked) >= 554
    leftover = sorted((raw / "_wal").rglob("*.wal"))
    assert leftover, "the last kill should leave an uncompacted segment behind"

    recovered = EventLog(raw).recover()
    assert sum(recovered.values()) > 0
    assert not list((raw / "_wal").rglob("*.wal"))

    requests = read_events(raw, "requests")
    impressions = read_events(raw, "impressions")
    for table, frame in (("requests", requests), ("impressions", impressions)):
        result = validate_frame(table, frame)
        assert result.n_bad == 0, result.bad.head()       # every row read is complete and valid
        assert not frame["event_id"].duplicated().any()    # replays rewrote batches, never duplicated them
    got = set(requests["request_id"])
    assert set(acked) <= got                               # nothing acknowledged is lost
    per_request = impressions.groupby("request_id").size()
    assert (per_request.reindex(acked) == PER_REQUEST).all()
    # appends are all-or-nothing: a request whose impressions append survived has all its rows
    assert (per_request == PER_REQUEST).all()
    sample = requests.set_index("request_id").loc[acked[:50]]
    assert (sample["query"] == ["q " + r for r in acked[:50]]).all()
    imp = impressions[impressions["request_id"] == acked[0]].sort_values("position")
    assert list(imp["item_id"]) == [f"i{j}" for j in range(PER_REQUEST)]
    assert list(imp["position_randomized"]) == [j % 2 == 0 for j in range(PER_REQUEST)]
    assert imp["ts"].iloc[0] == pd.Timestamp(T0)


def test_torn_tail_is_dropped_and_complete_records_kept(tmp_path):
    rows = [{"event_id": f"e{i}", "request_id": f"e{i}", "ts": T0, "user_id": "u", "session_id": None,
             "query": "red", "device": "app", "locale": None, "hour": 12} for i in range(3)]
    good = encode_record(rows[:2]) + encode_record(rows[2:])
    torn = encode_record([{**rows[0], "event_id": "torn"}])[:-9]           # killed inside the write
    flipped = bytearray(encode_record([{**rows[0], "event_id": "flip"}]))
    flipped[20] ^= 0x01                                                    # a damaged record, CRC catches it
    got, dropped = decode_segment(good + bytes(flipped) + torn)
    assert [r["event_id"] for r in got] == ["e0", "e1", "e2"] and dropped == 2

    seg = tmp_path / "raw" / "_wal" / "requests" / "00000000000000000001-dead.wal"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(good + torn)
    assert EventLog(tmp_path / "raw").recover() == {"requests": 3}
    frame = read_events(tmp_path / "raw", "requests")
    assert sorted(frame["event_id"]) == ["e0", "e1", "e2"] and validate_frame("requests", frame).n_bad == 0
    # recovering the same segment again (crash between the Parquet write and the delete) duplicates nothing
    seg.write_bytes(good)
    EventLog(tmp_path / "raw").recover()
    assert len(read_events(tmp_path / "raw", "requests")) == 3


def test_recover_leaves_a_live_writers_segment_alone(tmp_path):
    raw = tmp_path / "raw"
    live = EventLog(raw, flush_every=10_000)
    live.append("requests", [{"event_id": "r1", "request_id": "r1", "ts": T0, "user_id": "u", "session_id": None,
                              "query": "q", "device": "app", "locale": None, "hour": 12}])
    assert EventLog(raw).recover() == {}                   # the segment is flock'ed by `live`
    assert read_events(raw, "requests").empty
    assert live.flush() == {"requests": 1}
    assert list(read_events(raw, "requests")["event_id"]) == ["r1"]
    assert not list((raw / "_wal").rglob("*.wal"))


def test_failed_flush_keeps_rows_and_retries_under_the_same_batch(tmp_path, monkeypatch):
    import serving.event_log as mod

    raw = tmp_path / "raw"
    log = EventLog(raw, flush_every=10_000)
    row = {"event_id": "r1", "request_id": "r1", "ts": T0, "user_id": "u", "session_id": None, "query": "q",
           "device": "app", "locale": None, "hour": 12}
    log.append("requests", [row])
    real = mod.write_events
    monkeypatch.setattr(mod, "write_events", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        log.flush()
    assert log.pending()["requests"] == 1 and len(list((raw / "_wal").rglob("*.wal"))) == 1
    log.append("requests", [{**row, "event_id": "r2", "request_id": "r2"}])
    monkeypatch.setattr(mod, "write_events", real)
    assert log.flush() == {"requests": 2}
    assert sorted(read_events(raw, "requests")["event_id"]) == ["r1", "r2"]
    assert log.pending()["requests"] == 0 and not list((raw / "_wal").rglob("*.wal"))
