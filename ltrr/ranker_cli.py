"""`ltrr ranker ...`: the ranker's trainer on public learning-to-rank data.

`ltrr ranker eval-letor --train FILE --test FILE` trains the same LambdaMART trainer the nightly ranker uses
(``ml.families.ranker.fit_booster``) on a LETOR/SVMlight file (``label qid:Q f:v ...``) and prints NDCG@1/5/10
on the test file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ltrr._output import print_error

ranker_app = typer.Typer(help="The learning-to-rank model (XGBoost LambdaMART) on your own LETOR files.",
                         no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console() if sys.stdout.isatty() else Console(width=170)
err_console = Console(stderr=True)


def eval_letor_files(train_path: Path, test_path: Path, params: dict) -> dict:
    """Read both files, train on one, judge on the other; raises ``LetorFormatError`` for a bad file."""
    from ml.families.ranker import LETOR_PARAMS, letor_ndcg, read_letor, train_letor

    train = read_letor(train_path)
    test = read_letor(test_path, n_features=train.X.shape[1])
    test.X = test.X[:, : train.X.shape[1]]        # features the model never saw carry no information
    t0 = time.perf_counter()
    booster = train_letor(train, params)
    seconds = time.perf_counter() - t0
    metrics = letor_ndcg(test, booster.inplace_predict(test.X))
    return {"train": str(train_path), "test": str(test_path), "train_rows": int(train.X.shape[0]),
            "train_queries": train.n_queries, "test_rows": int(test.X.shape[0]), "test_queries": test.n_queries,
            "features": int(train.X.shape[1]), "params": {**LETOR_PARAMS, **params}, "train_seconds": round(seconds, 3),
            **{k: (int(v) if k.startswith("n_") else round(v, 6)) for k, v in metrics.items()}}


@ranker_app.command("eval-letor")
def eval_letor(
    train: Annotated[Path, typer.Option("--train", help="LETOR/SVMlight training file: 'label qid:Q f:v ...'.")],
    test: Annotated[Path, typer.Option("--test", help="LETOR/SVMlight test file, same feature ids.")],
    objective: Annotated[str, typer.Option(help="rank:ndcg (LambdaMART, the family default) or "
                                                "rank:pairwise.")] = "rank:ndcg",
    trees: Annotated[int | None, typer.Option(min=1, max=10_000,
                                              help="Boosting rounds (default: LETOR_PARAMS, 100).")] = None,
    leaves: Annotated[int | None, typer.Option(min=2, max=4096, help="Leaves per tree, leaf-wise growth "
                                                                     "(default: LETOR_PARAMS, 31).")] = None,
    learning_rate: Annotated[float | None, typer.Option(min=1e-4, max=1.0,
                                                        help="Default: LETOR_PARAMS (0.1).")] = None,
    threads: Annotated[int, typer.Option(min=1, max=256)] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")] = False,
) -> None:
    """Train the ranker's trainer on --train and print NDCG@1/5/10 on --test."""
    from ml.families.ranker import OBJECTIVES, LetorFormatError

    if objective not in OBJECTIVES:
        print_error(err_console, f"--objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
        raise typer.Exit(2)
    # Everything not set here comes from LETOR_PARAMS (chosen by CV on the train file, see bench/bench_letor.py).
    chosen = {"n_estimators": trees, "max_leaves": leaves, "learning_rate": learning_rate}
    params = {"objective": objective, "nthread": threads, **{k: v for k, v in chosen.items() if v is not None}}
    try:
        result = eval_letor_files(train, test, params)
    except (LetorFormatError, UnicodeDecodeError) as exc:
        print_error(err_console, str(exc))
        raise typer.Exit(2) from None
    if json_out:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"LambdaMART ({objective}, {trees} trees, {leaves} leaves) trained on {train.name} "
                        f"({result['train_queries']} queries), judged on {test.name} ({result['test_queries']} queries)")
    for col in ("NDCG@1", "NDCG@5", "NDCG@10", "queries judged", "train seconds"):
        table.add_column(col, justify="right")
    table.add_row(f"{result['ndcg@1']:.4f}", f"{result['ndcg@5']:.4f}", f"{result['ndcg@10']:.4f}",
                  str(result["n_queries_judged"]), f"{result['train_seconds']:.2f}")
    console.print(table)
