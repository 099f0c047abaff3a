"""`ltrr import`: load a user's CSV/Parquet into the raw event store after validating every row.

Good rows are written as one batch (keyed by the file's content hash, so importing the same file twice
does not duplicate it); bad rows go to ``{quarantine_dir}/{table}/`` with a ``_reasons`` column. Nothing is
silently dropped: the counts always add up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ml.events.schema import SCHEMAS
from ml.events.store import write_events
from ml.events.validate import validate_frame


@dataclass
class ImportResult:
    table: str
    rows_read: int
    rows_written: int
    rows_quarantined: int
    written: list[Path]
    quarantine_file: Path | None
    reasons: dict[str, int]


def read_user_file(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=True)
    raise ValueError(f"unsupported file type {suffix!r}: use .csv, .tsv or .parquet")


def import_file(path: Path, table: str, raw_dir: Path, quarantine_dir: Path) -> ImportResult:
    """Validate ``path`` against the ``table`` contract; write good rows, quarantine bad rows with reasons."""
    if table not in SCHEMAS:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(SCHEMAS)}")
    frame = read_user_file(path)
    unknown = sorted(set(frame.columns) - {f.name for f in SCHEMAS[table]})
    if unknown:
        raise ValueError(f"{path}: columns not in the {table} contract: {unknown} "
                         f"(expected: {[f.name for f in SCHEMAS[table]]})")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    result = validate_frame(table, frame)
    written = write_events(raw_dir, table, result.good, batch_id=f"import-{digest}")
    qfile = None
    reasons: dict[str, int] = {}
    if result.n_bad:
        qdir = Path(quarantine_dir) / table
        qdir.mkdir(parents=True, exist_ok=True)
        qfile = qdir / f"import-{digest}.csv"
        result.bad.to_csv(qfile, index=False)
        for rs in result.bad["_reasons"]:
            for r in rs.split(";"):
                reasons[r] = reasons.get(r, 0) + 1
    return ImportResult(table, len(frame), len(result.good), result.n_bad, written, qfile, reasons)
