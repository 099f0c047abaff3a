"""Writing a benchmark's JSON result and echoing its verdicts: one way for every bench that reports targets."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_results(path: Path, out: dict[str, Any], log: Callable[[str], None]) -> None:
    """Write ``out`` as indented JSON to ``path`` (folders created) and log one PASS/FAIL line per ``out["targets"]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    log(f"wrote {path}")
    for t in out.get("targets", []):
        log(f"  {'PASS' if t['pass'] else 'FAIL'} {t}")
