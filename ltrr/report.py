"""The demo's daily table (terminal) and HTML report with plots of the same series."""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ml.events.schema import STRATEGIES
from ml.settings import FAMILIES

_SHORT = {"lexical": "lex", "structured": "str", "semantic": "sem", "memory": "mem",
          "popularity": "pop", "exploration": "exp"}
_FAM_SHORT = {"bandit": "bnd", "ranker": "rnk", "conversion": "cvr", "q2e": "q2e", "attributes": "att"}


def _best_strategies() -> list[tuple[str, str]]:
    """(query type, the strategy the simulator made best for it), in query-type order."""
    from ml.sim import Simulator

    return sorted(Simulator.BEST_STRATEGY.items())


def table_rows(rows: Sequence) -> tuple[list[str], list[list[str]]]:
    best = _best_strategies()
    header = ["day", "requests", "click rate", "purchase rate", "NDCG@10",
              "strategy share (" + " ".join(_SHORT[s] for s in STRATEGIES) + ")",
              # per query type, the budget share the served plans gave its best strategy: the bandit's mix moving
              # toward it is the flywheel working (uniform over the 22 plans gives each strategy 1/6). Short: the
              # table fits the CLI's 170 columns; print_table's caption names the types and strategies.
              "best (" + " ".join(t[0] for t, _ in best) + ")",
              "champions (" + " ".join(_FAM_SHORT[f] for f in FAMILIES) + ")", "DAG"]
    body = []
    for r in rows:
        share = " ".join(f"{r.strategy_share.get(s, 0):.2f}" for s in STRATEGIES)
        by_type = getattr(r, "best_strategy_share", None) or {}
        best_share = " ".join(f"{by_type[t]:.2f}" if t in by_type else "-" for t, _ in best)
        champs = " ".join(f"v{r.champions[f]}" if r.champions.get(f) else "-" for f in FAMILIES)
        body.append([r.day, str(r.requests), f"{r.click_rate:.3f}", f"{r.purchase_rate:.3f}",
                     f"{r.ndcg10:.3f}", share, best_share, champs, f"{r.dag_state} {r.dag_seconds:.0f}s"])
    return header, body


def print_table(rows: Sequence, console=None, only_last: bool = False) -> None:
    """Print the daily table (or just its newest row) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    header, body = table_rows(rows)
    caption = None if only_last else ("best: budget share of each query type's best strategy (" + ", ".join(
        f"{t} {s}" for t, s in _best_strategies()) + "; uniform 1/6)")
    table = Table(show_header=not only_last, box=None, pad_edge=False, caption=caption, caption_justify="left")
    widths = [10, 8, 10, 13, 7, 40, 19, 30, 14]
    for h, w in zip(header, widths):
        table.add_column(h, min_width=w, no_wrap=True)
    for b in (body[-1:] if only_last else body):
        table.add_row(*b)
    console.print(table)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _finish(fig, ax, title: str, *, ylim: tuple[float, float] | None = None, grid: bool = True, **legend) -> str:
    """Title, legend (``legend``: its keyword arguments, font size 7 unless given), grid and y range of one daily
    plot, then the figure as a base64 PNG (closed)."""
    import matplotlib.pyplot as plt

    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(**{"fontsize": 7, **legend})
    if grid:
        ax.grid(alpha=0.3)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def plots(rows: Sequence) -> dict[str, str]:
    """Base64 PNGs: engagement and quality per day, strategy mix, champion versions, best-strategy share and NDCG
    per query type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [r.day[5:] for r in rows]
    out = {}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(days, [r.click_rate for r in rows], marker="o", label="click rate")
    ax.plot(days, [r.purchase_rate for r in rows], marker="o", label="purchase rate")
    ax.plot(days, [r.ndcg10 for r in rows], marker="o", label="NDCG@10 vs oracle")
    out["quality"] = _finish(fig, ax, "Engagement and ranking quality per simulated day", ylim=(0, 1),
                             loc="upper left", fontsize=8)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    bottom = [0.0] * len(rows)
    for s in STRATEGIES:
        vals = [r.strategy_share.get(s, 0.0) for r in rows]
        ax.bar(days, vals, bottom=bottom, label=s)
        bottom = [b + v for b, v in zip(bottom, vals)]
    out["strategies"] = _finish(fig, ax, "Share of requests per retrieval strategy (bandit's choice)", grid=False,
                                ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for f in FAMILIES:
        ax.step(days, [int(r.champions[f]) if r.champions.get(f) else 0 for r in rows], where="post",
                marker="o", label=f)
    out["champions"] = _finish(fig, ax, "Champion version per model family (0 = none yet)")

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for t, s in _best_strategies():
        ax.plot(days, [(getattr(r, "best_strategy_share", None) or {}).get(t, float("nan")) for r in rows],
                marker="o", label=f"{t} ({s})")
    ax.axhline(1 / len(STRATEGIES), color="grey", lw=1, ls="--", label="uniform cold start")
    out["best_strategy_share"] = _finish(fig, ax, "Budget share the served plans gave each query type's best strategy",
                                         ylim=(0, 1))

    types = sorted({t for r in rows for t in r.ndcg_by_type})
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for t in types:
        ax.plot(days, [r.ndcg_by_type.get(t, float("nan")) for r in rows], marker="o", label=t)
    out["by_type"] = _finish(fig, ax, "NDCG@10 per query type", ylim=(0, 1))
    return out


def conversion_calibration(decisions_dir: Path) -> dict | None:
    """The conversion champion's reliability bins from the latest promoted conversion decision record
    (``decisions/conversion-<day>-v<N>.json``: metrics on that night's matured holdout clicks); None if none has
    them. Falls back to the champion's numbers recorded by the latest refused decision (same holdout)."""
    records = []
    for path in Path(decisions_dir).glob("conversion-*-v*.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "version" in rec and "metrics" in rec:
            records.append(rec)
    records.sort(key=lambda r: (r.get("interval_start", ""), int(r.get("version", 0) or 0)))
    for rec in reversed(records):
        metrics, version = (rec["metrics"], rec["version"]) if rec.get("promoted") else (
            rec.get("champion_metrics") or {}, rec.get("champion_version"))
        bins = [(metrics[f"rel_pred_{i}"], metrics[f"rel_rate_{i}"]) for i in range(50)
                if f"rel_pred_{i}" in metrics and f"rel_rate_{i}" in metrics]
        if bins and version:
            return {"version": str(version), "interval_start": rec.get("interval_start", ""), "bins": bins,
                    "ece": metrics.get("ece"), "logloss": metrics.get("logloss"), "n_eval": metrics.get("n_eval"),
                    "observed_labels": bool(metrics.get("eval_on_observed_labels"))}
    return None


def calibration_plot(cal: dict) -> str:
    """Base64 PNG: reliability diagram of the conversion champion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = [b[0] for b in cal["bins"]], [b[1] for b in cal["bins"]]
    top = max(max(xs), max(ys), 1e-3) * 1.1
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="perfect calibration")
    ax.plot(xs, ys, marker="o", label=f"conversion v{cal['version']}")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted P(purchase | click)")
    ax.set_ylabel("observed rate" + (" (observed labels)" if cal["observed_labels"] else " (matured labels)"))
    ece = "" if cal.get("ece") is None else f", ECE {cal['ece']:.3f}"
    ax.set_title(f"Conversion champion calibration (holdout of {cal['interval_start'][:10]}, "
                 f"n={int(cal.get('n_eval') or 0)}{ece})", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    out = _png(fig)
    plt.close(fig)
    return out


def write_report(rows: Sequence, out_dir: Path, decisions_dir: Path | None = None) -> Path:
    """Write ``index.html`` (table + plots) and the plots as PNG files; returns the HTML path.

    ``decisions_dir`` (default ``<out_dir>/../decisions``, the gate's records) supplies the conversion champion's
    reliability diagram."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header, body = table_rows(rows)
    imgs = plots(rows)
    cal = conversion_calibration(decisions_dir or out_dir.parent / "decisions")
    if cal is not None:
        imgs["conversion_calibration"] = calibration_plot(cal)
    for name, b64 in imgs.items():
        (out_dir / f"{name}.png").write_bytes(base64.b64decode(b64))
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in b) + "</tr>" for b in body)
    figs = "".join(f'<figure><img src="data:image/png;base64,{b64}" alt="{name}"></figure>'
                   for name, b64 in imgs.items())
    best = ", ".join(f"{t}: {s}" for t, s in _best_strategies())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ltrr demo report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;font-family:monospace}}figure{{display:inline-block;margin:8px}}</style>
</head><body><h1>ltrr flywheel demo</h1>
<p>One row per simulated day: traffic served by the scorer with the champions of the night before; NDCG@10 is
measured against the simulator's oracle relevance; best: per query type, the budget share the served plans gave
its best strategy ({html.escape(best)}; uniform over the plans gives 1/6). Then the nightly DAG retrains, gates
and promotes.</p>
<table><tr>{th}</tr>{trs}</table>{figs}</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page)
    return path
