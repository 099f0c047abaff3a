"""Input files shared by the CLI's commands: one way to open a table and say what is wrong with it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def table_readers(**csv_kwargs: Any) -> dict[str, Callable[[Path], Any]]:
    """Readers by suffix for Parquet, CSV/TXT (comma) and TSV; ``csv_kwargs`` go to every ``pd.read_csv``."""
    import pandas as pd

    return {".parquet": pd.read_parquet, ".pq": pd.read_parquet,
            ".csv": lambda p: pd.read_csv(p, **csv_kwargs), ".txt": lambda p: pd.read_csv(p, **csv_kwargs),
            ".tsv": lambda p: pd.read_csv(p, sep="\t", **csv_kwargs)}


def open_table(path: Path, error: type[Exception], label: str, readers: Mapping[str, Callable[[Path], Any]],
               formats: str) -> Any:
    """``path`` read by the reader of its suffix; any failure raised as ``error`` with a message starting with
    ``label``: no such file, unknown format (``formats`` lists the accepted ones) or unreadable (and why)."""
    if not path.exists():
        raise error(f"{label}: no such file")
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise error(f"{label}: unknown format {path.suffix!r} ({formats})")
    try:
        return reader(path)
    except Exception as exc:
        raise error(f"{label}: unreadable ({type(exc).__name__}: {exc})") from exc
