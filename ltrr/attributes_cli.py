"""`ltrr attributes ...`: the attribute extractor on any catalog file.

`ltrr attributes eval --catalog FILE` trains the extractor on a share of the items whose values are known and
reports, per attribute, precision / recall / coverage on the held-out known values at the thresholds it chose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ltrr._input import open_table, table_readers
from ltrr._output import print_error

attributes_app = typer.Typer(help="Attribute extraction (color, brand, material, ...) from item text.",
                             no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console() if sys.stdout.isatty() else Console(width=170)

ID_COLUMNS = ("item_id", "id", "sku", "product_id")
TEXT_COLUMNS = ("title", "description")
NOT_ATTRIBUTES = {"event_id", "price", "created_at", "event_timestamp", "updated_at", "url", "image", "dt"}


class CatalogError(ValueError):
    """The file cannot be used as a catalog (message shown to the user, exit code 2)."""


def read_catalog(path: Path):
    """The catalog as a frame with ``item_id``, ``title``, ``description`` (maybe empty) and attribute columns."""
    frame = open_table(path, CatalogError, str(path), table_readers(dtype=str), "use .csv, .tsv or .parquet")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    id_col = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_col is None:
        raise CatalogError(f"{path}: no id column (one of {', '.join(ID_COLUMNS)}); columns: {list(frame.columns)}")
    if "title" not in frame.columns:
        raise CatalogError(f"{path}: no title column; columns: {list(frame.columns)}")
    frame = frame.rename(columns={id_col: "item_id"})
    if "description" not in frame.columns:
        frame["description"] = None
    if frame["item_id"].isna().any():
        raise CatalogError(f"{path}: {int(frame['item_id'].isna().sum())} rows without an id")
    return frame.drop_duplicates("item_id", keep="last").reset_index(drop=True)


def attribute_columns(frame, requested: list[str] | None = None, min_known: int = 10) -> list[str]:
    """Columns to extract: ``requested``, or every text column besides id/title/description with at least
    ``min_known`` known values, 2+ distinct values, and values repeated (not an identifier-like column)."""
    from ml.families.attributes import known_values

    if requested:
        missing = [a for a in requested if a not in frame.columns]
        if missing:
            raise CatalogError(f"attribute column(s) {missing} not in the file; columns: {list(frame.columns)}")
        return requested
    out = []
    for c in frame.columns:
        if c in ("item_id", *TEXT_COLUMNS) or c in NOT_ATTRIBUTES:
            continue
        if frame[c].dtype.kind in "fiumMb":
            continue
        y = known_values(frame, c).dropna()
        if len(y) >= min_known and y.nunique() >= 2 and y.nunique() <= 0.5 * len(y):
            out.append(c)
    if not out:
        raise CatalogError("no attribute columns: need text columns (besides id, title, description) with at "
                           f"least {min_known} known values repeated across items")
    return out


def evaluate_catalog(frame, attributes: list[str], holdout: float, target_precision: float,
                     n_bootstrap: int | None = None) -> dict:
    """Train on the items outside a hash holdout, evaluate every attribute on the held-out known values."""
    from ml.families.attributes import FAMILY, LEVELS, _hash_share
    from ml.families.base import NotEnoughData

    hold = _hash_share(frame["item_id"], "holdout:") < holdout
    train, held = frame.loc[~hold].reset_index(drop=True), frame.loc[hold].reset_index(drop=True)
    params = {"attributes": attributes, "attribute": attributes[0], "target_precision": target_precision}
    if n_bootstrap:
        params["n_bootstrap"] = n_bootstrap
    try:
        model = FAMILY.train(train, params)
        metrics = FAMILY.evaluate(model, held) if len(held) else {}
    except NotEnoughData as exc:
        raise CatalogError(f"not enough labelled items: {exc}") from exc
    result = {"n_items": len(frame), "n_train_items": len(train), "n_holdout_items": len(held),
              "holdout": holdout, "target_precision": target_precision, "attributes": {},
              "skipped": model.meta.get("skipped", {})}
    for a, ex in model.extractors.items():
        def m(k: str, a=a):
            v = metrics.get(f"{a}_{k}")
            return None if v is None or v == -1.0 else float(v)
        result["attributes"][a] = {
            "precision": m("precision"), "recall": m("recall"), "coverage": m("coverage"),
            "precision_global": m("precision_global"), "recall_global": m("recall_global"),
            "majority_accuracy": m("majority_accuracy"), "n_eval": int(metrics.get(f"{a}_n_eval", 0)),
            "n_train": ex.meta["n_train"], "target_met_validation": ex.meta["target_met"],
            "thresholds": {n: (None if ex.thresholds[n] == float("inf") else ex.thresholds[n]) for n in LEVELS},
        }
    return result


@attributes_app.command("eval")
def eval_(catalog: Annotated[Path, typer.Option("--catalog", help="CSV/TSV/Parquet: an id, a title, optionally a "
                                                "description, and attribute columns (some blank).")],
          holdout: Annotated[float, typer.Option(min=0.05, max=0.9, help="Share of items held out.")] = 0.2,
          target_precision: Annotated[float, typer.Option(min=0.5, max=0.999)] = 0.95,
          attributes: Annotated[str | None, typer.Option(help="Comma-separated attribute columns "
                                                         "(default: detected).")] = None,
          json_out: Annotated[Path | None, typer.Option("--json", help="Also write the JSON here.")] = None) -> None:
    """Train on the known values of a catalog file and report per-attribute precision, recall and coverage."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        frame = read_catalog(catalog)
        attrs = attribute_columns(frame, [a.strip().lower() for a in attributes.split(",")] if attributes else None)
        result = evaluate_catalog(frame, attrs, holdout, target_precision)
    except CatalogError as exc:
        print_error(console, str(exc))
        raise typer.Exit(2) from None
    result["catalog"] = str(catalog)

    from ml.families.attributes import LEVELS

    def f(v):
        return "-" if v is None else f"{v:.3f}"
    table = Table(title=f"attribute extraction on {catalog.name}: {result['n_holdout_items']} held-out items, "
                        f"target precision {target_precision:.2f}")
    for col in ("attribute", "n eval", "precision", "recall", "coverage", "recall (1 threshold)", "majority",
                "thresholds " + "/".join(LEVELS)):
        table.add_column(col, justify="left" if col == "attribute" else "right")
    for a, r in result["attributes"].items():
        thr = "/".join("-" if t is None else f"{t:.2f}" for t in r["thresholds"].values())
        table.add_row(a, str(r["n_eval"]), f(r["precision"]), f(r["recall"]), f(r["coverage"]),
                      f(r["recall_global"]), f(r["majority_accuracy"]), thr)
    console.print(table)
    for a, why in result["skipped"].items():
        console.print(f"[yellow]skipped {a}:[/yellow] {why}")
    text = json.dumps(result, indent=2)
    print(text)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text)
