"""Output shared by the CLI's report commands: the result as JSON, to a file and/or stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def emit_json(result: dict[str, Any], output: Path | None, as_json: bool) -> bool:
    """Write ``result`` as JSON to ``output`` (when given) and print it when ``as_json``; True when printed
    (the caller then skips its table)."""
    text = json.dumps(result, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    if as_json:
        typer.echo(text)
    return as_json
