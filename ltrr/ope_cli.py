"""`ltrr ope`: off-policy evaluation (IPS, SNIPS, doubly robust, bootstrap intervals) of a target policy on any
logged bandit data. Formats: docs/bandit.md ("`ltrr ope`: file formats").

Logged decisions (Parquet or CSV), one row per decision:
  action       the chosen action (any id: a string or an integer)
  reward       the observed reward (a number)
  propensity   the probability the LOGGING policy gave that action, in (0, 1]
  decision_id  optional; joins the target-probability file when both have it
  every other column is a context feature (numbers as they are, strings one-hot) used by DR's reward model
  (or only the columns named with --context).

The target policy, one of:
  --target-probs FILE  one row per logged decision (same order, or joined on decision_id) and one column per
                       action id holding pi(action | that decision's context); each row must sum to 1.
  --model NAME@ALIAS | NAME/VERSION  a registered bandit model (e.g. ltrr-bandit@champion); the logged rows
                       must then carry the bandit's context (query_norm or query, device, hour, and when available
                       the q_* / s_*__<strategy> features) and the action as a plan key ("lexical",
                       "lexical+semantic") or as strategies + budgets columns.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ltrr._input import open_table, table_readers
from ltrr._output import emit_json, print_error

console = Console() if sys.stdout.isatty() else Console(width=170)

REQUIRED = ("action", "reward", "propensity")
ID_COLUMN = "decision_id"


class OpeInputError(ValueError):
    """A file cannot be used (message shown to the user, exit code 2)."""


def read_table(path: Path, what: str):
    """A Parquet or CSV file as a frame, with a readable error for anything else."""
    frame = open_table(path, OpeInputError, f"{what} {path}", table_readers(), "use .csv, .tsv or .parquet")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def check_logged_frame(frame, path: Path) -> None:
    """Required columns present, rewards numeric, propensities in (0, 1]: otherwise a message naming the rows."""
    import pandas as pd

    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise OpeInputError(f"logged file {path}: missing column(s) {', '.join(missing)} "
                            f"(required: {', '.join(REQUIRED)}; found: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise OpeInputError(f"logged file {path}: no rows")
    if frame["action"].isna().any():
        raise OpeInputError(f"logged file {path}: {int(frame['action'].isna().sum())} rows without an action")
    reward = pd.to_numeric(frame["reward"], errors="coerce")
    if reward.isna().any():
        bad = int(np.flatnonzero(reward.isna().to_numpy())[0])
        raise OpeInputError(f"logged file {path}: reward must be a number (row {bad}: {frame['reward'].iloc[bad]!r})")
    prop = pd.to_numeric(frame["propensity"], errors="coerce").to_numpy(dtype=float)
    bad = ~((prop > 0) & (prop <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise OpeInputError(f"logged file {path}: {int(bad.sum())} propensities outside (0, 1] "
                            f"(row {i}: {frame['propensity'].iloc[i]!r})")


def target_from_file(frame, probs, path: Path) -> tuple[np.ndarray, list[str]]:
    """(n, K) target probabilities aligned with the logged rows, and the action ids (column order)."""
    if ID_COLUMN in probs.columns and ID_COLUMN in frame.columns:
        probs = probs.set_index(ID_COLUMN)
        missing = ~frame[ID_COLUMN].isin(probs.index)
        if missing.any():
            raise OpeInputError(f"target file {path}: no row for {int(missing.sum())} logged decisions "
                                f"(first: {frame[ID_COLUMN][missing].iloc[0]!r})")
        probs = probs.loc[frame[ID_COLUMN].to_numpy()]
    else:
        probs = probs.drop(columns=[ID_COLUMN], errors="ignore")
        if len(probs) != len(frame):
            raise OpeInputError(f"target file {path}: {len(probs)} rows for {len(frame)} logged decisions (give one "
                                f"row per decision in the same order, or a {ID_COLUMN} column in both files)")
    actions = [str(c) for c in probs.columns]
    logged = {str(a) for a in frame["action"].unique()}
    unknown = sorted(logged - set(actions))
    if unknown:
        raise OpeInputError(f"target file {path}: no probability column for logged action(s) {unknown[:5]} "
                            f"(columns: {actions[:10]})")
    try:
        target = probs.to_numpy(dtype=float)
    except ValueError as exc:
        raise OpeInputError(f"target file {path}: probabilities must be numbers ({exc})") from exc
    if not np.isfinite(target).all() or (target < 0).any():
        raise OpeInputError(f"target file {path}: probabilities must be finite and >= 0")
    sums = target.sum(axis=1)
    off = np.abs(sums - 1.0) > 1e-3
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise OpeInputError(f"target file {path}: {int(off.sum())} rows whose probabilities do not sum to 1 "
                            f"(row {i} sums to {sums[i]:.6g})")
    return target / sums[:, None], actions


def context_matrix(frame, context: list[str] | None) -> np.ndarray:
    """Context features for the DR reward model: numeric columns as they are, the others one-hot."""
    import pandas as pd

    skip = {*REQUIRED, ID_COLUMN, "strategies", "budgets"}
    cols = context if context is not None else [c for c in frame.columns if c not in skip]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise OpeInputError(f"--context names column(s) not in the logged file: {', '.join(missing)}")
    if not cols:
        return np.zeros((len(frame), 0))
    parts = []
    for c in cols:
        s = frame[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            parts.append(pd.to_numeric(s, errors="coerce").fillna(0.0).to_frame(c).astype(float))
        else:
            parts.append(pd.get_dummies(s.astype(str), prefix=c, dtype=float))
    return pd.concat(parts, axis=1).to_numpy(dtype=float)


def target_from_model(frame, ref: str, tracking_uri: str):
    """(target (n, K), chosen (n,), action keys, context matrix) of a registered bandit model on these rows."""
    import mlflow

    from ml.families.bandit import context_matrix as bandit_matrix
    from ml.families.bandit import logged_decisions, policy_matrix
    from ml.registry import _client, _quiet

    if "@" in ref:
        name, alias = ref.split("@", 1)
        uri = f"models:/{name}@{alias}"
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
        uri = f"models:/{name}/{version}"
    else:
        raise OpeInputError(f"--model {ref!r}: give NAME@ALIAS (ltrr-bandit@champion) or NAME/VERSION (ltrr-bandit/3)")
    try:
        with _quiet():
            _client(tracking_uri)
            model = mlflow.pyfunc.load_model(uri).unwrap_python_model().model
    except Exception as exc:
        raise OpeInputError(f"--model {ref!r}: cannot load {uri} from {tracking_uri} ({type(exc).__name__}: "
                            f"{str(exc)[:300]})") from exc
    if not hasattr(model, "action_pmf") and not hasattr(model, "pmf"):
        raise OpeInputError(f"--model {ref!r} is not a bandit policy")
    rows = frame.copy()
    if "query_norm" not in rows.columns:
        if "query" not in rows.columns:
            raise OpeInputError("with --model the logged file needs the bandit's context: a query_norm (or query) "
                                "column, and device / hour when available")
        from ml.text import normalize_query
        rows["query_norm"] = [normalize_query(str(q)) for q in rows["query"]]
    rows["device"] = rows["device"] if "device" in rows.columns else ""
    rows["hour"] = rows["hour"] if "hour" in rows.columns else 0
    if "strategies" not in rows.columns:
        plans = [str(a).split("+") for a in rows["action"]]
        rows["strategies"] = [[p.split(":")[0] for p in plan] for plan in plans]
        rows["budgets"] = [[float(p.split(":")[1]) if ":" in p else 1.0 for p in plan] for plan in plans]
    rows["strategy"] = [s[0] for s in rows["strategies"]]
    logged = logged_decisions(rows)
    target, chosen, plans = policy_matrix(model, logged)
    keys = ["+".join(s if len({w for _, w in plan}) <= 1 else f"{s}:{w:.2f}" for s, w in plan) for plan in plans]
    return target, chosen, keys, bandit_matrix(logged.shared)


def run(logged_path: Path, *, target_probs: Path | None, model: str | None, tracking_uri: str | None,
        context: list[str] | None, n_boot: int, confidence: float, seed: int) -> dict[str, Any]:
    """Everything `ltrr ope` computes, as a JSON-able dict (the command prints it)."""
    from ml import ope

    if (target_probs is None) == (model is None):
        raise OpeInputError("give exactly one target policy: --target-probs FILE or --model NAME@ALIAS")
    frame = read_table(logged_path, "logged file")
    check_logged_frame(frame, logged_path)
    frame = frame.reset_index(drop=True)
    reward = frame["reward"].astype(float).to_numpy()
    prop = frame["propensity"].astype(float).to_numpy()
    if target_probs is not None:
        target, actions = target_from_file(frame, read_table(target_probs, "target file"), target_probs)
        index = {a: i for i, a in enumerate(actions)}
        chosen = np.fromiter((index[str(a)] for a in frame["action"]), dtype=np.int64, count=len(frame))
        X = context_matrix(frame, context)
        source = {"target_probs": str(target_probs)}
    else:
        if not tracking_uri:
            from ml.settings import Settings
            tracking_uri = Settings().tracking_uri
        target, chosen, actions, X = target_from_model(frame, str(model), tracking_uri)
        source = {"model": model, "tracking_uri": tracking_uri}
    q = ope.fit_reward_model(X, chosen, reward, len(actions), seed=seed)
    try:
        est = ope.estimate(reward, prop, chosen, target, q, n_boot=n_boot, confidence=confidence, seed=seed)
    except ValueError as exc:
        raise OpeInputError(str(exc)) from exc
    return {
        "logged_file": str(logged_path), **source, "n_decisions": len(frame), "n_actions": len(actions),
        "confidence": confidence, "bootstrap": n_boot, "logged_mean_reward": float(reward.mean()),
        "effective_sample_size": ope.effective_sample_size(prop, chosen, target),
        "estimates": {k: v.as_dict() for k, v in est.items()},
        "target_action_share": {a: float(v) for a, v in zip(actions, target.mean(axis=0))},
    }


def ope_command(
    logged: Annotated[Path, typer.Argument(help="Logged decisions (.parquet or .csv): action, reward, propensity, "
                                                "context columns; see docs/bandit.md.")],
    target_probs: Annotated[Path | None, typer.Option("--target-probs", help="Target action probabilities: one "
                                                      "row per decision, one column per action id.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registered bandit model: NAME@ALIAS "
                                              "(ltrr-bandit@champion) or NAME/VERSION.")] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI for --model "
                                                     "(default: the LTRR_* settings').")] = None,
    context: Annotated[str | None, typer.Option("--context", help="Comma-separated context columns for DR's "
                                                "reward model (default: every other column).")] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=50, help="Bootstrap replicates.")] = 1000,
    confidence: Annotated[float, typer.Option("--confidence", min=0.5, max=0.999, help="Interval level.")] = 0.95,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap and the DR cross-fitting.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the JSON to this file.")] = None,
) -> None:
    """Off-policy evaluation: IPS, SNIPS and doubly robust estimates of a target policy's value on logged bandit
    decisions, each with a bootstrap confidence interval."""
    cols = [c.strip() for c in context.split(",") if c.strip()] if context else None
    try:
        res = run(logged, target_probs=target_probs, model=model, tracking_uri=tracking_uri, context=cols,
                  n_boot=bootstrap, confidence=confidence, seed=seed)
    except OpeInputError as exc:
        print_error(console, str(exc))
        raise typer.Exit(2) from None
    if emit_json(res, output, as_json):
        return
    table = Table(title=f"off-policy value of the target policy ({res['n_decisions']} logged decisions, "
                        f"{res['n_actions']} actions)")
    for col in ("estimator", "value", f"{int(confidence * 100)}% lower", f"{int(confidence * 100)}% upper", "se"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for name, e in res["estimates"].items():
        table.add_row(name.upper(), f"{e['value']:.4f}", f"{e['lower']:.4f}", f"{e['upper']:.4f}", f"{e['se']:.4f}")
    console.print(table)
    console.print(f"logged mean reward {res['logged_mean_reward']:.4f}; effective sample size "
                  f"{res['effective_sample_size']:.0f} of {res['n_decisions']}")
    if output is not None:
        console.print(f"JSON written to {output}")
