"""Output shared by the CLI's commands: the result as JSON, to a file and/or stdout; error lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape


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


def print_error(console: Console, message: str) -> None:
    """``error: message`` in red on ``console``. The message is printed as it is (brackets in a path or a value are
    not taken for markup) and not wrapped (a long path stays on one line and can be copied)."""
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
