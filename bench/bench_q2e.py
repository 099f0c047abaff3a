"""Benchmark the q2e memory (actual and predicted entries) on simulated traffic with a known answer.

Not a test (see ../shared/STYLE.md): it measures and writes JSON; a missed target is recorded, never raised.

1. Logging period (``--days``): uniform-random policy over the six strategies, strategies rebuilt nightly
   (``bench/_sim_logs.py``). The simulator adds ``--new-items-per-day`` cold items every day.
2. Training cutoff T = end of the last logging day. ``label_ranker`` at T and the catalog are given to the real
   ``Q2E.train``; the catalog covers the holdout days too (items created after T, never seen in any
   interaction), as the nightly retrain would regenerate predicted entries over the catalog of its night while
   the interactions stay frozen at T here, isolating cold start. ``model.actual_only()`` is the same memory
   without predicted entries.
3. Holdout requests of days T .. T + ``--holdout-days``: the MEMORY strategy (``MemoryStrategy`` over the
   catalog existing that day, i.e. the model's ``lookup`` restricted to existing items) retrieves k = 10, 100.
   Relevant = ``sim.oracle.relevance(query, as_of=the day before)`` (items existing when the request is made).
   Recall@k is averaged over requests with at least one relevant item of the class being measured:

   * frequency buckets by the query's request count in the training logs: head = the most frequent queries
     that make up the first 50% of logged requests, torso = the next 30%, tail = the last 20% and queries never
     logged (``unseen`` is also reported alone); relevant = every existing item;
   * established items (created before T) vs new items (created at or after T): relevance restricted to the
     class, every query type.

Target: recall@k of NEW items with predicted entries >= 0.5 x recall@k of ESTABLISHED items with actual entries
only, at k = 10 and at k = 100 (both must hold).

Run: ``.venv/bin/python bench/bench_q2e.py`` (about 1-2 minutes on one core; ``--help`` for options).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, shared machine
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._sim_logs import simulate_logs
from bench.bench_families import git_info, prepare_requests, r4
from ml.families.q2e import FAMILY as Q2E
from ml.families.q2e import training_frame
from ml.retrieval.base import build_index
from ml.retrieval.memory import MemoryStrategy
from ml.sim import SimConfig, Simulator

KS = (10, 100)
_T0 = time.perf_counter()


def progress(msg: str) -> None:
    print(f"[bench_q2e {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def frequency_buckets(logged_queries: pd.Series) -> dict[str, str]:
    """query_norm -> head | torso | tail by cumulative share of logged requests (50% / 30% / 20%)."""
    counts = logged_queries.value_counts()
    counts = counts.iloc[np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))]
    share = counts.cumsum() / counts.sum()
    before = share - counts / counts.sum()            # share of traffic of the queries ranked above
    return {q: ("head" if b < 0.5 else "torso" if b < 0.8 else "tail") for q, b in zip(counts.index, before)}


def recall(hits: list[str], relevant: set[str]) -> float:
    return len(relevant.intersection(hits)) / len(relevant)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Recall of the q2e memory strategy with and without predicted (generated) entries, on head/"
                    "torso/tail queries and on items created after training; writes JSON. ~1-2 min on one core.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--days", type=int, default=8, help="logging days before the training cutoff")
    ap.add_argument("--holdout-days", type=int, default=3, help="later days whose requests judge the model")
    ap.add_argument("--requests-per-day", type=int, default=1000, help="simulated searches per day")
    ap.add_argument("--items", type=int, default=1500, help="initial catalog size")
    ap.add_argument("--new-items-per-day", type=int, default=60, help="cold items the simulator adds daily")
    ap.add_argument("--seed", type=int, default=7, help="simulator and policy seed")
    ap.add_argument("--budget", type=int, default=50, help="candidates retrieved per strategy while logging")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "q2e.json", help="JSON output")
    args = ap.parse_args(argv)
    if args.days < 2 or args.holdout_days < 2:
        ap.error("need --days >= 2 and --holdout-days >= 2 (new items are first queried the day after T)")

    from threadpoolctl import threadpool_limits
    threadpool_limits(1)
    walls: dict[str, float] = {}
    cfg = SimConfig(seed=args.seed, n_items=args.items, requests_per_day=args.requests_per_day,
                    new_items_per_day=args.new_items_per_day)
    sim = Simulator(cfg)
    N, H = args.days, args.holdout_days

    t = time.perf_counter()
    logs = simulate_logs(sim, N, N + H, args.budget, args.seed, progress)
    walls["simulate_logs"] = time.perf_counter() - t
    cutoff = logs.day_start(N)

    t = time.perf_counter()
    lr = logs.label_ranker(cutoff)
    catalog_all = logs.dim_items(logs.day_start(N + H))
    model = Q2E.train(training_frame(lr, catalog_all), {})
    actual = model.actual_only()
    walls["train"] = time.perf_counter() - t
    progress(f"trained at {cutoff.date()}: {model.meta['n_actual_entries']} actual, "
             f"{model.meta['n_predicted_entries']} predicted entries, {len(catalog_all)} catalog items")

    t = time.perf_counter()
    buckets = frequency_buckets(logs.requests["query_norm"])
    new_ids = set(catalog_all.loc[catalog_all["created_at"] >= cutoff, "item_id"].astype(str))
    variants = {"with_predicted": model, "without_predicted": actual}
    # rows: (bucket or class, variant, k) -> list of per-request recalls
    acc: dict[tuple[str, str, int], list[float]] = {}
    per_type: dict[tuple[str, str, str, int], list[float]] = {}
    n_req = 0
    for d in range(N, N + H):
        day_catalog = logs.dim_items(logs.day_start(d))
        index = build_index(day_catalog)
        mem = {v: MemoryStrategy(index, m) for v, m in variants.items()}
        req = prepare_requests(sim, d)
        as_of = sim.day(d - 1)
        for r in req.itertuples(index=False):
            rel = set(sim.oracle.relevance(r.query, as_of=as_of))
            if not rel:
                continue
            n_req += 1
            hits = {v: [c.item_id for c in s.retrieve(r.query, {}, max(KS))] for v, s in mem.items()}
            bucket = buckets.get(r.query_norm, "tail")
            groups = {bucket: rel, "all_queries": rel}
            if r.query_norm not in buckets:
                groups["unseen"] = rel
            rel_new, rel_old = rel & new_ids, rel - new_ids
            if rel_new:
                groups["new_items"] = rel_new
            if rel_old:
                groups["established_items"] = rel_old
            for g, relevant in groups.items():
                for v, h in hits.items():
                    for k in KS:
                        x = recall(h[:k], relevant)
                        acc.setdefault((g, v, k), []).append(x)
                        if g in ("new_items", "established_items"):
                            per_type.setdefault((g, r.query_type, v, k), []).append(x)
    walls["evaluate"] = time.perf_counter() - t

    def table(src: dict) -> dict:
        out: dict = {}
        for key, vals in sorted(src.items()):
            *path, k = key
            node = out
            for p in path:
                node = node.setdefault(p, {})
            node[f"recall@{k}"] = float(np.mean(vals))
            node["n_requests"] = len(vals)
        return out

    results = table(acc)
    by_type = table(per_type)
    targets = []
    for k in KS:
        new_pred = results.get("new_items", {}).get("with_predicted", {}).get(f"recall@{k}", 0.0)
        new_act = results.get("new_items", {}).get("without_predicted", {}).get(f"recall@{k}", 0.0)
        est_act = results.get("established_items", {}).get("without_predicted", {}).get(f"recall@{k}", 0.0)
        targets.append({
            "target": f"recall@{k}: new items with predicted >= 0.5 x established items with actual entries only",
            "new_items_with_predicted": new_pred, "new_items_without_predicted": new_act,
            "established_items_actual_only": est_act,
            "ratio": new_pred / est_act if est_act > 0 else None,
            "pass": bool(est_act > 0 and new_pred >= 0.5 * est_act),
        })
    walls["total"] = time.perf_counter() - _T0
    out = {
        "benchmark": "q2e",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_info(),
        "inputs": {"days": N, "holdout_days": H, "requests_per_day": args.requests_per_day, "items": args.items,
                   "new_items_per_day": args.new_items_per_day, "seed": args.seed, "budget": args.budget,
                   "cutoff": cutoff.isoformat(), "python": platform.python_version(),
                   "buckets": "head/torso/tail = queries making up the first 50% / next 30% / last 20% of logged "
                              "requests (by count, ties by query); never-logged queries count as tail"},
        "data": {"logged_requests": len(logs.requests), "logged_impressions": len(logs.impressions),
                 "logged_clicks": int((logs.engagements["type"] == "click").sum()),
                 "holdout_requests_with_relevant_items": n_req, "catalog_items": len(catalog_all),
                 "new_items": len(new_ids),
                 "queries_by_bucket": pd.Series(buckets).value_counts().to_dict(),
                 "actual_entries": model.meta["n_actual_entries"],
                 "predicted_entries": model.meta["n_predicted_entries"],
                 "top_templates": [[" ".join(t), w] for t, w in (model.generator.templates[:10]
                                                                  if model.generator else [])]},
        "recall": results,
        "recall_by_query_type": by_type,
        "targets": targets,
        "summary": {"pass": all(tg["pass"] for tg in targets)},
        "wall_seconds": walls,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r4(out), indent=2) + "\n")
    for g in ("head", "torso", "tail", "unseen", "established_items", "new_items"):
        row = results.get(g, {})
        progress(f"{g:18s} " + "  ".join(
            f"{v} r@10 {row.get(v, {}).get('recall@10', float('nan')):.3f} "
            f"r@100 {row.get(v, {}).get('recall@100', float('nan')):.3f}" for v in variants)
            + f"  (n={row.get('with_predicted', {}).get('n_requests', 0)})")
    progress(f"wrote {args.out}: target {'pass' if out['summary']['pass'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
