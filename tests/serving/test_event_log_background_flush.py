"""The flush a full buffer triggers runs off the appending (request) thread, and loses nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import serving.event_log as mod
from ml.events.store import read_events
from serving.event_log import EventLog

NOW = datetime(2026, 1, 2, 12, tzinfo=UTC)


def _requests(start: int, n: int) -> list[dict]:
    return [{"event_id": f"r{i}", "request_id": f"r{i}", "ts": NOW, "user_id": "u", "session_id": None,
             "query": "red shoes", "device": "desktop", "locale": None, "hour": 12} for i in range(start, start + n)]


def test_full_buffer_is_flushed_by_another_thread(tmp_path, monkeypatch) -> None:
    raw = tmp_path / "raw"
    log = EventLog(raw, flush_every=5)
    writers: list[str] = []
    release = threading.Event()
    real = mod.write_events

    def slow_write(*args, **kwargs):
        writers.append(threading.current_thread().name)
        release.wait(10)           # a slow disk: the append below must not wait for it
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "write_events", slow_write)
    for i in range(5):
        log.append("requests", _requests(i, 1))   # the 5th fills the buffer: returns while the write is blocked
    log.append("requests", _requests(5, 3))       # appends go on during the background write
    release.set()
    log.wait_background(10)
    assert writers and all(w == "event-log-flush" for w in writers)
    log.close()                                   # the rest, synchronously
    got = read_events(raw, "requests")
    assert sorted(got["request_id"]) == sorted(f"r{i}" for i in range(8))
    assert not list((raw / "_wal" / "requests").glob("*.wal"))


def test_failed_background_flush_keeps_rows_for_the_next_flush(tmp_path, monkeypatch) -> None:
    raw = tmp_path / "raw"
    log = EventLog(raw, flush_every=4)
    real = mod.write_events
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "write_events", failing_once)
    log.append("requests", _requests(0, 4))       # triggers the background flush, which fails
    log.wait_background(10)
    assert read_events(raw, "requests").empty
    assert log.pending()["requests"] == 4         # kept (sealed, with its WAL segment)
    log.append("requests", _requests(4, 1))
    log.close()
    assert sorted(read_events(raw, "requests")["request_id"]) == [f"r{i}" for i in range(5)]


def test_synchronous_flush_is_still_available(tmp_path) -> None:
    raw = tmp_path / "raw"
    log = EventLog(raw, flush_every=3, background_flush=False)
    log.append("requests", _requests(0, 3))
    assert len(read_events(raw, "requests")) == 3  # written before append returned
    log.close()
