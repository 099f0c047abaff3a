"""The scorer's half of closing the loop: thread-safe appends to the raw event log, through a write-ahead log.

Why a WAL: rows used to sit in memory until a batch of ``flush_every`` was written as Parquet, so a killed
scorer lost up to a batch of decisions (and their propensities, which off-policy evaluation cannot do without).
Now every ``append()`` first writes its rows as ONE framed line to an append-only segment file and only then
returns ("acknowledged"):

    <crc32 of the payload, 8 hex> <payload: JSON list of the rows>\\n

* one ``os.write`` per append on an ``O_APPEND`` descriptor: once it returns, the bytes are in the kernel's page
  cache and survive the process being killed (SIGKILL, OOM). ``fsync_every=N`` also fsyncs every N appends
  (``1``: each append survives a power cut, at a few ms each on disk); every sealed segment is fsynced.
* a kill in the middle of a write leaves at most one torn line at the end of a segment; recovery checks the
  frame (newline, CRC, JSON) and drops it. It was never acknowledged, so nothing acknowledged is lost, and no
  partial record is ever read.
* one segment per table at a time, under ``{wal_dir}/{table}/``. ``flush()`` seals the current segment (fsync,
  close), writes its rows as Parquet via ``ml.events.store.write_events`` (atomic temp file + rename) with the
  batch id ``wal-<segment name>``, then deletes the segment. Replaying a segment therefore rewrites the same
  files: a crash between the Parquet write and the delete duplicates nothing.
* ``recover()`` (called when the app starts) compacts every segment left behind by a dead writer the same way.
  Live writers hold an exclusive ``flock`` on their open segment, so a second scorer on the same folder never
  steals a segment still being written.

Why hand-written rather than a library: the contract is "Parquet partitions that dbt reads"; pyarrow's IPC
stream writer gives no per-record integrity check on a torn tail, and a database (SQLite WAL) would add a second
store to keep consistent with the Parquet files. The mechanism above is ~100 lines and tested by killing a writer
mid-stream (tests/serving/test_event_log_durability.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from ml.events.schema import SCHEMAS
from ml.events.store import write_events

log = logging.getLogger(__name__)

WAL_SUFFIX = ".wal"


def _default(o: Any) -> Any:
    """orjson fallback: pandas Timestamps, numpy scalars and arrays (what the scorer's rows hold)."""
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__} into the event WAL")


def encode_record(rows: list[dict]) -> bytes:
    """One framed WAL line for one append: ``<crc32 hex> <json>\\n``."""
    payload = orjson.dumps(rows, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"%08x " % zlib.crc32(payload) + payload + b"\n"


def decode_segment(data: bytes) -> tuple[list[dict], int]:
    """(rows of every intact record, number of damaged records dropped). Only a torn tail is expected."""
    rows: list[dict] = []
    dropped = 0
    for line in data.split(b"\n"):
        if not line:
            continue
        crc, _, payload = line.partition(b" ")
        try:
            if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
                raise ValueError("crc mismatch")
            rows.extend(orjson.loads(payload))
        except ValueError:   # orjson.JSONDecodeError is a ValueError
            dropped += 1
    return rows, dropped


def _rows_frame(table: str, rows: list[dict]) -> pd.DataFrame:
    """Rows read back from JSON: timestamps are ISO strings again; parse the contract's timestamp columns."""
    frame = pd.DataFrame.from_records(rows)
    for f in SCHEMAS[table]:
        if pa.types.is_timestamp(f.type) and f.name in frame.columns:
            frame[f.name] = pd.to_datetime(frame[f.name], utc=True, format="ISO8601")
    return frame


@dataclass
class _Segment:
    path: Path
    fd: int
    appends: int = 0


class EventLog:
    def __init__(self, raw_dir: Path, flush_every: int = 1000, *, wal: bool = True, wal_dir: Path | None = None,
                 fsync_every: int = 0, background_flush: bool = True) -> None:
        """``wal=False`` keeps rows in memory only until flushed (a crash loses the buffer; tests, benchmarks).

        ``background_flush``: the flush a full buffer triggers runs on a helper thread, not in the ``append()``
        that filled it (a Parquet write and an fsync take 40-120 ms: on the request path that was the scorer's p99).
        The rows are durable in the WAL either way; ``flush()`` and ``close()`` stay synchronous.
        """
        self.raw_dir = Path(raw_dir)
        self.flush_every = flush_every
        self.wal = wal
        self.wal_dir = Path(wal_dir) if wal_dir is not None else self.raw_dir / "_wal"
        self.fsync_every = fsync_every
        self._lock = threading.Lock()
        self._flush_locks = {t: threading.Lock() for t in SCHEMAS}
        self._buffers: dict[str, list[dict]] = {t: [] for t in SCHEMAS}
        self._segments: dict[str, _Segment | None] = {t: None for t in SCHEMAS}
        self._sealed: dict[str, list[tuple[Path, list[dict]]]] = {t: [] for t in SCHEMAS}
        self.rows_written: dict[str, int] = {t: 0 for t in SCHEMAS}
        self.background_flush = background_flush
        self._bg_lock = threading.Lock()
        self._bg_pending: set[str] = set()
        self._bg_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ appends
    def _open_segment(self, table: str) -> _Segment:
        folder = self.wal_dir / table
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{WAL_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # "a live writer owns this segment" (see recover)
        return _Segment(path, fd)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def append(self, table: str, rows: list[dict]) -> None:
        """Log ``rows`` for ``table`` (durable in the WAL when this returns); flushes at ``flush_every`` rows."""
        if table not in self._buffers:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(self._buffers)}")
        if not rows:
            return
        record = encode_record(rows) if self.wal else b""
        with self._lock:
            if self.wal:
                seg = self._segments[table]
                if seg is None:
                    seg = self._segments[table] = self._open_segment(table)
                self._write_all(seg.fd, record)
                seg.appends += 1
                if self.fsync_every and seg.appends % self.fsync_every == 0:
                    os.fsync(seg.fd)
            buf = self._buffers[table]
            buf.extend(rows)
            full = len(buf) >= self.flush_every
        if full:
            if self.background_flush:
                self._flush_in_background(table)
            else:
                self.flush(table)

    def _flush_in_background(self, table: str) -> None:
        """Queue ``table`` for the flush thread (started when none is running; it exits when the queue is empty)."""
        with self._bg_lock:
            self._bg_pending.add(table)
            if self._bg_thread is not None and self._bg_thread.is_alive():
                return
            self._bg_thread = threading.Thread(target=self._drain, name="event-log-flush", daemon=True)
            self._bg_thread.start()

    def _drain(self) -> None:
        while True:
            with self._bg_lock:
                if not self._bg_pending:
                    self._bg_thread = None
                    return
                tables = sorted(self._bg_pending)
                self._bg_pending.clear()
            for t in tables:
                try:
                    self.flush(t)
                except Exception:  # noqa: BLE001 - flush logged the traceback and kept the rows for the next flush
                    log.warning("event log: background flush of %s failed; the rows stay in the WAL", t)

    def wait_background(self, timeout: float | None = None) -> None:
        """Wait for a running background flush (tests; ``close``)."""
        with self._bg_lock:
            thread = self._bg_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {t: len(b) + sum(len(r) for _, r in self._sealed[t]) for t, b in self._buffers.items()}

    # ------------------------------------------------------------------ flush / compaction
    def _seal(self, table: str) -> None:
        """Under ``self._lock``: move the buffer (and its segment) to the sealed list; appends go to a fresh one."""
        rows, self._buffers[table] = self._buffers[table], []
        seg, self._segments[table] = self._segments[table], None
        if seg is not None:
            os.fsync(seg.fd)
            os.close(seg.fd)
        if rows:
            path = seg.path if seg is not None else self.wal_dir / table / f"mem-{uuid.uuid4().hex}{WAL_SUFFIX}"
            self._sealed[table].append((path, rows))
        elif seg is not None:
            seg.path.unlink(missing_ok=True)

    def flush(self, table: str | None = None) -> dict[str, int]:
        """Write buffered rows (one table or all) as Parquet and drop their WAL segments; rows written per table.

        On a write error the rows stay sealed (with their segment on disk) and the next flush retries them
        under the same batch id; the error is raised.
        """
        tables = [table] if table else list(self._buffers)
        written: dict[str, int] = {}
        for t in tables:
            with self._flush_locks[t]:
                with self._lock:
                    self._seal(t)
                    todo = list(self._sealed[t])
                for path, rows in todo:
                    try:
                        write_events(self.raw_dir, t, pd.DataFrame.from_records(rows), batch_id=f"wal-{path.stem}")
                    except Exception:
                        log.exception("event log: writing %d %s rows failed; kept for the next flush", len(rows), t)
                        raise
                    path.unlink(missing_ok=True)
                    with self._lock:
                        self._sealed[t].remove((path, rows))
                        self.rows_written[t] += len(rows)
                    written[t] = written.get(t, 0) + len(rows)
        return written

    def close(self) -> None:
        self.wait_background()
        self.flush()

    # ------------------------------------------------------------------ recovery
    def recover(self) -> dict[str, int]:
        """Compact segments left by dead writers into Parquet (idempotent); returns rows recovered per table.

        Segments whose writer is alive (it holds the segment's ``flock``) are left alone. Torn records at a
        segment's end (the writer died mid-write) are dropped and logged: they were never acknowledged.
        """
        recovered: dict[str, int] = {}
        if not self.wal_dir.exists():
            return recovered
        for t in SCHEMAS:
            folder = self.wal_dir / t
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"*{WAL_SUFFIX}")):
                if self._owned(t, path):
                    continue
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue   # a live writer (another scorer process) owns it
                    with os.fdopen(os.dup(fd), "rb") as fh:
                        rows, dropped = decode_segment(fh.read())
                    if dropped:
                        log.warning("event WAL %s: dropped %d torn record(s) (never acknowledged)", path, dropped)
                    if rows:
                        write_events(self.raw_dir, t, _rows_frame(t, rows), batch_id=f"wal-{path.stem}")
                        recovered[t] = recovered.get(t, 0) + len(rows)
                    path.unlink(missing_ok=True)
                finally:
                    os.close(fd)
        if recovered:
            log.warning("event WAL: recovered %s rows left by a previous scorer", recovered)
        return recovered

    def _owned(self, table: str, path: Path) -> bool:
        with self._lock:
            seg = self._segments[table]
            return (seg is not None and seg.path == path) or any(p == path for p, _ in self._sealed[table])
