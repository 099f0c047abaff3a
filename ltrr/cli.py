"""`ltrr`: the command line of the flywheel. `ltrr --help` lists every command."""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ltrr._output import print_error
from ltrr.attributes_cli import attributes_app
from ltrr.eval_cli import eval_app
from ltrr.infra import infra_app
from ltrr.ope_cli import ope_command
from ltrr.ranker_cli import ranker_app

app = typer.Typer(help="Learning-to-rank-and-retrieve flywheel: logs in, features out, five model families "
                       "retrained nightly, gated, promoted and served.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
# Piped or logged output has no terminal width: give the daily table room instead of cutting it at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=170)

app.add_typer(attributes_app, name="attributes")
app.add_typer(ranker_app, name="ranker")
app.command("ope")(ope_command)
app.add_typer(eval_app, name="eval")
app.add_typer(infra_app, name="infra")

HomeOpt = Annotated[Path | None, typer.Option("--home", help="State folder (default $LTRR_HOME or ./.ltrr).")]


def _settings(home: Path | None = None):
    from pydantic import ValidationError

    from ml.settings import Settings

    try:
        return Settings(**({"home": home} if home else {}))
    except ValidationError as exc:  # show the message, not a traceback
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2)


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    # ml.*: per-family notes (e.g. "training naive") are kept in the model metadata; py.warnings: library
    # deprecation warnings routed through logging by Airflow. Keep the daily table readable.
    for name in ("great_expectations", "mlflow", "feast", "alembic", "airflow", "dbt", "urllib3", "ml",
                 "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)


@app.command()
def demo(days: Annotated[int, typer.Option(min=1, max=60, help="Simulated days.")] = 7,
         requests_per_day: Annotated[int, typer.Option(min=50, max=100_000)] = 800,
         items: Annotated[int, typer.Option(min=100, max=200_000, help="Catalog size.")] = 1500,
         seed: int = 7, home: HomeOpt = None,
         fresh: Annotated[bool, typer.Option(help="Start from an empty state folder.")] = True) -> None:
    """Simulate N days of search traffic; after each day run the real nightly DAG and reload the champions."""
    import shutil

    from ltrr.demo import run_demo

    settings = _settings(home)
    if fresh and settings.home.exists():
        shutil.rmtree(settings.home)
    _quiet()
    console.print(f"[bold]ltrr demo[/bold]: {days} days x {requests_per_day} requests, state in {settings.home}")
    rows = run_demo(settings, days=days, requests_per_day=requests_per_day, seed=seed, n_items=items,
                    console=console)
    failed = [r.day for r in rows if r.dag_state != "success"]
    if failed:
        console.print(f"[red]DAG runs failed for {failed}[/red]")
        raise typer.Exit(1)


@app.command("import")
def import_(table: Annotated[str, typer.Argument(help="catalog | requests | decisions | impressions | engagements")],
            file: Annotated[Path, typer.Argument(help="CSV, TSV or Parquet file with the table's columns.")],
            home: HomeOpt = None) -> None:
    """Validate a file against the raw event contract and load it; bad rows are quarantined with reasons."""
    from ml.events.importer import import_file

    settings = _settings(home)
    try:
        res = import_file(file, table, settings.raw_dir, settings.quarantine_dir)
    except (ValueError, FileNotFoundError) as exc:
        print_error(console, str(exc))
        raise typer.Exit(2)
    console.print(f"{res.table}: read {res.rows_read}, written {res.rows_written} "
                  f"to {len(res.written)} partition(s), quarantined {res.rows_quarantined}")
    if res.rows_quarantined:
        t = Table("reason", "rows")
        for reason, n in sorted(res.reasons.items(), key=lambda kv: -kv[1]):
            t.add_row(reason, str(n))
        console.print(t)
        console.print(f"quarantined rows with reasons: {res.quarantine_file}")
        raise typer.Exit(1)


@app.command("run-day")
def run_day_cmd(day: Annotated[str, typer.Argument(help="Data interval day, YYYY-MM-DD.")], home: HomeOpt = None) -> None:
    """Run the nightly DAG (real Airflow, `dag.test`) for one day's data interval."""
    from ltrr.airflow_env import configure, run_day

    try:
        d = date.fromisoformat(day)
    except ValueError:
        print_error(console, f"{day!r} is not a YYYY-MM-DD date")
        raise typer.Exit(2)
    settings = _settings(home)
    settings.ensure_dirs()
    configure(settings)
    _quiet()
    result = run_day(settings, d)
    console.print_json(json.dumps(result))
    if result["state"] != "success":
        raise typer.Exit(1)


@app.command()
def models(home: HomeOpt = None) -> None:
    """Show each family's @champion version."""
    from ml.registry import champion_versions

    settings = _settings(home)
    _quiet()
    t = Table("family", "registered model", "@champion")
    for fam, ver in champion_versions(settings.tracking_uri, settings.model_prefix).items():
        t.add_row(fam, f"{settings.model_prefix}{fam}", ver or "-")
    console.print(t)


@app.command()
def rollback(family: Annotated[str, typer.Argument(help="bandit | ranker | conversion | q2e | attributes")],
             reason: Annotated[str, typer.Option(help="Why (recorded with the decision).")] = "manual rollback",
             home: HomeOpt = None) -> None:
    """Restore FAMILY's @previous_champion as @champion (recorded); a running scorer serves it after a reload."""
    from ml.registry import rollback_champion
    from ml.settings import FAMILIES

    if family not in FAMILIES:
        print_error(console, f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
        raise typer.Exit(2)
    settings = _settings(home)
    _quiet()
    try:
        d = rollback_champion(settings.tracking_uri, family, reports_dir=settings.reports_dir,
                              model_prefix=settings.model_prefix, reason=reason, actor="cli")
    except LookupError as exc:
        print_error(console, str(exc))
        raise typer.Exit(1)
    console.print(f"{settings.model_prefix}{family}: @champion v{d.replaced_version or '-'} -> v{d.version} "
                  f"(recorded in {d.record_path}). Reload a running scorer: POST /admin/reload.")


@app.command()
def serve(host: str = "127.0.0.1", port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
          home: HomeOpt = None) -> None:
    """Start the online scorer (FastAPI) on the current champions."""
    import uvicorn

    from serving.app import create_app

    settings = _settings(home)
    settings.ensure_dirs()
    _quiet()
    uvicorn.run(create_app(settings, settings.feast_repo), host=host, port=port, log_level="info")


@app.command()
def airflow(home: HomeOpt = None, port: int = 8080) -> None:
    """Start Airflow (api-server, scheduler, dag-processor) on SQLite with this project's DAGs."""
    from ltrr.airflow_env import configure

    settings = _settings(home)
    settings.ensure_dirs()
    env = configure(settings)
    env["AIRFLOW__API__PORT"] = str(port)
    env["AIRFLOW__CORE__EXECUTOR"] = env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    console.print(f"Airflow UI on http://127.0.0.1:{port} (all users are admins in this local setup; "
                  f"no login needed). AIRFLOW_HOME={env['AIRFLOW_HOME']}")
    airflow_bin = Path(sys.executable).with_name("airflow")
    # standalone starts its components as `airflow ...` subprocesses found on PATH: put this venv first.
    env["PATH"] = f"{airflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.execvpe(str(airflow_bin), [str(airflow_bin), "standalone"], {**os.environ, **env})


if __name__ == "__main__":
    app()
