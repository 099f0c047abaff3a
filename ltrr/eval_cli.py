"""`ltrr eval judgments`: retrieval quality on any catalog against relevance judgments.

Builds every retrieval strategy's index from the catalog file (the project's own models: BM25, attribute
parsing, TF-IDF+SVD embeddings in an HNSW index; no downloads), then for each judged query reports recall@10/100/
1000, NDCG@10 and MRR of: each strategy alone (top 1000), the bandit's union of all six strategies at the same
total budget (1000, interleaved by ``ml.retrieval.retrieve_plan``), and the full retrieve-and-rank pipeline (that
union ordered by a ranker: ``--ranker NAME@ALIAS`` or the registry's ranker champion when there is one; without
a ranker the pipeline row is the union's order and says so). Formats: docs/bandit.md ("`ltrr eval judgments`").
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ltrr._input import open_table, table_readers
from ltrr._output import emit_json, print_error

eval_app = typer.Typer(help="Offline evaluation against relevance judgments.", no_args_is_help=True,
                       pretty_exceptions_show_locals=False)
console = Console() if sys.stdout.isatty() else Console(width=170)

KS = (10, 100, 1000)
JUDGMENT_ALIASES = {"query": ("query", "q", "query_text"), "item_id": ("item_id", "doc_id", "docno", "id", "sku"),
                    "relevance": ("relevance", "rel", "grade", "label")}


class EvalInputError(ValueError):
    """A file cannot be used (message shown to the user, exit code 2)."""


def read_judgments(path: Path):
    """(query, item_id, relevance) rows from CSV/TSV/Parquet, or a TREC-qrels-like text file (``.qrels``):
    whitespace-separated ``query_id 0 item_id relevance`` (then the query text is the query id)."""
    import pandas as pd

    readers = {**table_readers(dtype=str),
               ".qrels": lambda p: pd.read_csv(p, sep=r"\s+", header=None,
                                               names=["query", "iter", "item_id", "relevance"],
                                               dtype={"query": str, "item_id": str})}
    frame = open_table(path, EvalInputError, f"judgments {path}", readers, ".csv, .tsv, .parquet, .qrels")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    rename = {}
    for want, names in JUDGMENT_ALIASES.items():
        have = next((c for c in names if c in frame.columns), None)
        if have is None:
            raise EvalInputError(f"judgments {path}: no {want} column (one of {', '.join(names)}); columns: "
                                 f"{list(frame.columns)}")
        rename[have] = want
    frame = frame.rename(columns=rename)[["query", "item_id", "relevance"]].copy()
    rel = pd.to_numeric(frame["relevance"], errors="coerce")
    if rel.isna().any():
        i = int(np.flatnonzero(rel.isna().to_numpy())[0])
        raise EvalInputError(f"judgments {path}: relevance must be a number (row {i}: {frame['relevance'].iloc[i]!r})")
    frame["relevance"] = rel.astype(float)
    frame["query"] = frame["query"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    if frame.empty:
        raise EvalInputError(f"judgments {path}: no rows")
    return frame


def metrics_of(ranked: list[str], grades: dict[str, float]) -> dict[str, float]:
    """recall@10/100/1000 (relevance > 0), NDCG@10 (gain 2^rel - 1, ideal from all judged items), MRR."""
    relevant = {i for i, g in grades.items() if g > 0}
    out: dict[str, float] = {}
    for k in KS:
        out[f"recall@{k}"] = len(relevant & set(ranked[:k])) / len(relevant) if relevant else float("nan")
    gains = [2.0 ** grades.get(i, 0.0) - 1.0 for i in ranked[:10]]
    dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
    ideal = sorted((2.0 ** g - 1.0 for g in grades.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    out["ndcg@10"] = dcg / idcg if idcg > 0 else float("nan")
    first = next((r for r, i in enumerate(ranked) if i in relevant), None)
    out["mrr"] = 1.0 / (first + 1) if first is not None else 0.0
    return out


def _ranker_order(ranker: Any, retrieval: Any, qn: str, cands: list) -> list[str]:
    """The union ordered by the ranker, features as the scorer fills them with no online store (defaults)."""
    from ml.families.ranker import ranker_frame
    from ml.retrieval import candidate_scores
    from ml.retrieval.structured import attr_match

    frame = candidate_scores(retrieval.strategies, qn, cands)
    index = retrieval.index
    pos = index.positions(frame["item_id"].tolist())
    frame["price"] = np.where(pos >= 0, index.price[np.maximum(pos, 0)], 0.0)
    structured = retrieval.strategies["structured"]
    frame["attr_match"] = attr_match(structured.parser, index, [qn] * len(frame), frame["item_id"].tolist())
    scores = np.asarray(ranker.score(ranker_frame(frame)), dtype=np.float64)
    return frame["item_id"].to_numpy()[np.argsort(-scores, kind="stable")].tolist()


def run(catalog_path: Path, judgments_path: Path, *, ranker_ref: str | None, tracking_uri: str | None,
        depth: int = 1000, progress: Any = None) -> dict[str, Any]:
    import pandas as pd

    from ltrr.attributes_cli import CatalogError, read_catalog
    from ml.events.schema import STRATEGIES
    from ml.families.bandit import UNION_ACTION
    from ml.retrieval import build_retrieval, retrieve_plan
    from ml.text import normalize_query

    try:
        catalog = read_catalog(catalog_path)
    except CatalogError as exc:
        raise EvalInputError(str(exc)) from exc
    judgments = read_judgments(judgments_path)
    unknown = ~judgments["item_id"].isin(set(catalog["item_id"].astype(str)))
    retrieval = build_retrieval(catalog, None)
    ranker, ranker_source = _load_ranker(ranker_ref, tracking_uri)
    names = list(STRATEGIES)
    systems = [*names, "bandit_union", "pipeline"]
    per: dict[str, list[dict[str, float]]] = {s: [] for s in systems}
    queries = judgments.groupby("query", sort=True)
    for n_done, (query, group) in enumerate(queries):
        grades = dict(zip(group["item_id"], group["relevance"]))
        qn = normalize_query(query)
        ctx = {"request_id": f"eval:{query}"}
        for s in names:
            per[s].append(metrics_of([c.item_id for c in retrieval.strategies[s].retrieve(qn, ctx, depth)], grades))
        chosen, budgets = UNION_ACTION.logged(depth)
        union = retrieve_plan(retrieval.strategies, chosen, budgets, qn, ctx)
        per["bandit_union"].append(metrics_of([c.item_id for c in union], grades))
        order = _ranker_order(ranker, retrieval, qn, union) if ranker is not None and union else \
            [c.item_id for c in union]
        per["pipeline"].append(metrics_of(order, grades))
        if progress is not None:
            progress(n_done + 1)
    table = {s: {m: float(np.nanmean([r[m] for r in rows])) if rows else float("nan")
                 for m in ("recall@10", "recall@100", "recall@1000", "ndcg@10", "mrr")} for s, rows in per.items()}
    return {"catalog": str(catalog_path), "judgments": str(judgments_path), "n_items": len(catalog),
            "n_queries": int(judgments["query"].nunique()), "n_judgments": len(judgments),
            "judged_items_not_in_catalog": int(unknown.sum()), "depth": depth,
            "pipeline_ranker": ranker_source, "memory_note": "no q2e model is trained from a catalog alone: "
            "memory retrieves nothing here", "metrics": table,
            "judgments_per_query": float(pd.Series(judgments.groupby("query").size()).mean())}


def _load_ranker(ref: str | None, tracking_uri: str | None) -> tuple[Any, str]:
    """The ranker for the pipeline row: ``ref`` (NAME@ALIAS / NAME/VERSION), else the registry's champion."""
    import mlflow

    from ml.registry import _client, _quiet, load_champion

    if tracking_uri is None:
        from ml.settings import Settings
        tracking_uri = Settings().tracking_uri
    try:
        with _quiet():
            if ref:
                uri = f"models:/{ref}" if "@" in ref or "/" in ref else None
                if uri is None:
                    raise EvalInputError(f"--ranker {ref!r}: give NAME@ALIAS or NAME/VERSION")
                _client(tracking_uri)
                return mlflow.pyfunc.load_model(uri).unwrap_python_model().model, ref
            champ = load_champion(tracking_uri, "ranker")
    except EvalInputError:
        raise
    except Exception as exc:
        if ref:
            raise EvalInputError(f"--ranker {ref!r}: cannot load it ({type(exc).__name__}: {str(exc)[:200]})") from exc
        champ = None
    if champ is None:
        return None, "none (no ranker champion: the pipeline row is the union's retrieval order)"
    return champ[1], f"ltrr-ranker@champion (v{champ[0]})"


@eval_app.command("judgments")
def judgments_command(
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog file (.csv/.tsv/.parquet): item_id (or id, "
                                          "sku), title, optional description and attribute columns.")],
    judgments: Annotated[Path, typer.Option("--judgments", help="Judgments (.csv/.tsv/.parquet: query, item_id, "
                                            "relevance; or .qrels: 'query 0 item_id relevance').")],
    ranker: Annotated[str | None, typer.Option("--ranker", help="Ranker for the pipeline row (NAME@ALIAS); "
                                               "default: the registry's ranker champion, if any.")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow URI (default: settings').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the JSON to this file.")] = None,
) -> None:
    """Recall@10/100/1000, NDCG@10 and MRR per retrieval strategy, for the bandit's union of all strategies and for
    the full retrieve-and-rank pipeline, on a catalog and its relevance judgments."""
    from rich.progress import Progress

    try:
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task("evaluating queries", total=None)
            res = run(catalog, judgments, ranker_ref=ranker, tracking_uri=tracking_uri,
                      progress=lambda n: prog.update(task, completed=n))
    except EvalInputError as exc:
        print_error(console, str(exc))
        raise typer.Exit(2) from None
    if emit_json(res, output, as_json):
        return
    table = Table(title=f"retrieval against judgments ({res['n_queries']} queries, {res['n_items']} items)")
    cols = ("recall@10", "recall@100", "recall@1000", "ndcg@10", "mrr")
    table.add_column("system")
    for c in cols:
        table.add_column(c, justify="right")
    for system, m in res["metrics"].items():
        table.add_row(system, *(f"{m[c]:.3f}" for c in cols))
    console.print(table)
    console.print(f"pipeline ranker: {res['pipeline_ranker']}; {res['memory_note']}")
    if res["judged_items_not_in_catalog"]:
        console.print(f"[yellow]{res['judged_items_not_in_catalog']} judged items are not in the catalog[/yellow]")
