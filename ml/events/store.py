"""The raw event store: Parquet partitioned by day, ``{raw_dir}/{table}/dt=YYYY-MM-DD/part-{batch}.parquet``.

Writes are atomic (temp file + rename) and keyed by a batch id, so writing the same batch again replaces it
instead of duplicating it: reruns are idempotent.
"""

from __future__ import annotations

import os
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ml.events.schema import NULLABLE, PARTITION_TS, SCHEMAS


def partition_dir(raw_dir: Path, table: str, day: date) -> Path:
    return Path(raw_dir) / table / f"dt={day.isoformat()}"


def _atomic_write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def to_arrow(table: str, frame: pd.DataFrame) -> pa.Table:
    """Cast a frame to the contract's schema (column order and types); raises on a missing column."""
    schema = SCHEMAS[table]
    missing = [f.name for f in schema if f.name not in frame.columns and f.name not in NULLABLE[table]]
    if missing:
        raise ValueError(f"{table}: missing columns {missing}")
    absent = [f.name for f in schema if f.name not in frame.columns]
    if absent:  # optional columns an older producer does not write: null, per the contract
        frame = frame.assign(**{name: None for name in absent})
    return pa.Table.from_pandas(frame[[f.name for f in schema]], schema=schema, preserve_index=False)


def write_events(raw_dir: Path, table: str, frame: pd.DataFrame, batch_id: str) -> list[Path]:
    """Write one batch of events, split into day partitions by the table's partition timestamp.

    The same ``batch_id`` written twice replaces the earlier files (idempotent reruns).
    """
    if frame.empty:
        return []
    ts_col = PARTITION_TS[table]
    days = pd.to_datetime(frame[ts_col], utc=True).dt.date
    written = []
    for day, part in frame.groupby(days, sort=True):
        path = partition_dir(raw_dir, table, day) / f"part-{batch_id}.parquet"
        _atomic_write(to_arrow(table, part), path)
        written.append(path)
    return written


def read_events(raw_dir: Path, table: str, start: date | None = None, end: date | None = None,
                as_written: bool = False) -> pd.DataFrame:
    """Read a table's partitions with ``start <= dt <= end`` (inclusive days); empty frame if none.

    Cast to the contract's schema, unless ``as_written``: then files are read as they are (a missing or
    mistyped column stays so), which is what a data gate must see.
    """
    root = Path(raw_dir) / table
    frames = []
    if root.exists():
        for d in sorted(root.glob("dt=*")):
            day = date.fromisoformat(d.name[3:])
            if (start and day < start) or (end and day > end):
                continue
            for f in sorted(d.glob("part-*.parquet")):
                frames.append(pq.read_table(f) if as_written else pq.read_table(f, schema=SCHEMAS[table]))
    if not frames:
        return SCHEMAS[table].empty_table().to_pandas()
    if as_written:
        return pa.concat_tables(frames, promote_options="permissive").to_pandas()
    return pa.concat_tables(frames).to_pandas()
