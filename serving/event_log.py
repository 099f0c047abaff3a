"""Buffered, thread-safe appends to the raw event log (the scorer's half of closing the loop).

Rows are kept in memory per table and written by `ml.events.store.write_events` in batches, each under a
fresh batch id (atomic temp-file + rename), so a crash loses at most the unflushed buffer and never leaves
a half-written partition file.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path

import pandas as pd

from ml.events.schema import SCHEMAS
from ml.events.store import write_events

log = logging.getLogger(__name__)


class EventLog:
    def __init__(self, raw_dir: Path, flush_every: int = 1000) -> None:
        self.raw_dir = Path(raw_dir)
        self.flush_every = flush_every
        self._lock = threading.Lock()
        self._buffers: dict[str, list[dict]] = {t: [] for t in SCHEMAS}
        self.rows_written: dict[str, int] = {t: 0 for t in SCHEMAS}

    def append(self, table: str, rows: list[dict]) -> None:
        """Buffer rows for ``table``; writes that table's buffer once it holds ``flush_every`` rows."""
        if table not in self._buffers:
            raise ValueError(f"unknown table {table!r}; expected one of {', '.join(self._buffers)}")
        with self._lock:
            buf = self._buffers[table]
            buf.extend(rows)
            full = len(buf) >= self.flush_every
        if full:
            self.flush(table)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {t: len(b) for t, b in self._buffers.items()}

    def flush(self, table: str | None = None) -> dict[str, int]:
        """Write buffered rows (one table or all); returns rows written per table."""
        tables = [table] if table else list(self._buffers)
        written: dict[str, int] = {}
        for t in tables:
            with self._lock:  # take the buffer; appends during the write go to a fresh one
                rows, self._buffers[t] = self._buffers[t], []
            if not rows:
                continue
            try:
                write_events(self.raw_dir, t, pd.DataFrame.from_records(rows), batch_id=uuid.uuid4().hex)
            except Exception:
                with self._lock:  # keep the rows for the next attempt
                    self._buffers[t][:0] = rows
                log.exception("event log: writing %d %s rows failed; kept in the buffer", len(rows), t)
                raise
            written[t] = len(rows)
            with self._lock:
                self.rows_written[t] += len(rows)
        return written

    def close(self) -> None:
        self.flush()
