"""Position-bias correction and objective of the ranker, measured against the simulator's oracle.

Not a test (see ../shared/STYLE.md): it measures and writes ``bench/results/ranker.json``; nothing is asserted.

Logging (``--days`` days): every request is served like the scorer would without a ranker: a uniform-random
strategy, its top 10 candidates in retrieval order, and ``--explore-rate`` of the pages shuffled
(``position_randomized``, the scorer's position exploration). ``Simulator.respond`` clicks with position bias
(P(examine p) = p^-decay, decay 0.8-1.0 by device). So the training labels are click-based and biased toward the
retrieval order, exactly the situation the ranker meets after serving a champion.

Six trainers, the real ``RankerFamily.train``: objective ``rank:ndcg`` or ``rank:pairwise`` x debias ``none`` (raw
grades), ``ips`` (gains times inverse examination propensities fitted on the shuffled pages, the family default)
or ``unbiased`` (XGBoost's Unbiased LambdaMART, ``lambdarank_unbiased=True``).

Judge (``--holdout-days`` later days, a sample of ``--eval-requests``): the union of all six strategies'
candidates ordered by each model, oracle NDCG@10 (``sim.oracle.ndcg``: true relevance, no position bias), paired
differences against ``rank:ndcg`` + ``none``. Also the family's own IPS-weighted click NDCG on a logged holdout.

Feedback loop (``--loop-days``, 0 to skip): the flywheel's own situation after its first night. A champion (the
family default trained on the retrieval-order days above) serves ``--loop-days`` further days like the scorer:
the chosen strategy's ``--budget`` candidates ordered by the champion, its top 10 shown, ``--explore-rate`` of the
pages shuffled (features frozen at the cutoff). Challengers ``rank:ndcg`` x {none, ips, unbiased} are trained on
those champion-ordered clicks only and judged like above on the day after the loop, next to the champion.

Run: ``.venv/bin/python bench/bench_ranker.py`` (~2 min on one core; ``--seed`` for other worlds).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_families import (
    DAY,
    PAGE,
    DailyFeatures,
    attributed,
    candidates,
    git_info,
    impressions_of,
    label_ranker,
    paired,
    prepare_requests,
    r4,
    with_item_features,
)
from ml.events.schema import STRATEGIES
from ml.families.ranker import FAMILY as RANKER
from ml.families.ranker import position_bias_eta, ranker_frame
from ml.retrieval import build_strategies, candidate_scores
from ml.sim import SimConfig, Simulator

_T0 = time.perf_counter()
VARIANTS = [(o, d) for o in ("rank:ndcg", "rank:pairwise") for d in ("none", "ips", "unbiased")]
TRAINERS: dict[str, dict[str, Any]] = {f"{o}|{d}": {"objective": o, "debias": d} for o, d in VARIANTS}
# The LETOR benchmark's tree shape (31 leaves grown leaf-wise, ml.families.ranker.LETOR_PARAMS) on this data: is
# the family's depth-3 default still right at the flywheel's scale?
TRAINERS["rank:ndcg|none|31 leaves"] = {"objective": "rank:ndcg", "debias": "none", "max_depth": 0,
                                        "max_leaves": 31, "grow_policy": "lossguide"}


def progress(msg: str) -> None:
    print(f"[bench_ranker {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def uniform_requests(sim: Simulator, d: int, rng) -> tuple[pd.DataFrame, np.ndarray]:
    """Day ``d``'s requests, each logged with a strategy drawn uniformly (its propensity recorded)."""
    req = prepare_requests(sim, d)
    chosen = np.asarray(STRATEGIES, dtype=object)[rng.integers(0, len(STRATEGIES), len(req))]
    req["strategy"], req["propensity"] = chosen, 1.0 / len(STRATEGIES)
    return req, chosen


def shuffle_and_respond(sim: Simulator, req: pd.DataFrame, imp: pd.DataFrame, explore: float, rng) -> pd.DataFrame:
    """Shuffle the positions of an ``explore`` share of pages (flagged ``position_randomized``, in place), then the
    simulator's engagements with the shown pages."""
    shuffled = set(req["request_id"][rng.random(len(req)) < explore])
    imp["position_randomized"] = imp["request_id"].isin(shuffled)
    for _, g in imp[imp["position_randomized"]].groupby("request_id"):
        imp.loc[g.index, "position"] = rng.permutation(g["position"].to_numpy())
    eng = sim.respond(req, imp)
    eng["ts"] = pd.to_datetime(eng["ts"], utc=True)
    return eng


def log_day(sim: Simulator, strategies: dict, d: int, budget: int, explore: float, rng) -> tuple:
    req, chosen = uniform_requests(sim, d, rng)
    imp, _ = impressions_of(strategies, req, chosen, budget)
    return req, imp, shuffle_and_respond(sim, req, imp, explore, rng)


def log_day_ranked(sim: Simulator, strategies: dict, d: int, budget: int, explore: float, rng,
                   champion: Any, feats: DailyFeatures, asof_day: int) -> tuple:
    """One day served like the scorer with a ranker: the chosen strategy's ``budget`` candidates ordered by
    ``champion`` (features as of ``asof_day``), the top 10 shown, a share of pages shuffled."""
    req, chosen = uniform_requests(sim, d, rng)
    parts = []
    for r, s in zip(req.itertuples(index=False), chosen):
        ctx = {"request_id": r.request_id, "device": r.device, "hour": int(r.hour), "user_id": r.user_id}
        f = candidate_scores(strategies, r.query_norm, candidates(strategies, r.query_norm, ctx, s, budget))
        f.insert(0, "request_id", r.request_id)
        f["ts"] = r.ts
        parts.append(f)
    cand = pd.concat(parts, ignore_index=True)
    page_cols = list(cand.columns)
    cand["query_norm"] = cand["request_id"].map(req.set_index("request_id")["query_norm"])
    scored = with_item_features(cand, feats, np.full(len(cand), asof_day))
    cand["_score"] = champion.score(ranker_frame(scored))
    cand["_order"] = np.arange(len(cand))
    cand = cand.sort_values(["request_id", "_score", "_order"], ascending=[True, False, True], kind="mergesort")
    cand["position"] = (cand.groupby("request_id", sort=False).cumcount() + 1).astype("int32")
    imp = cand.loc[cand["position"] <= PAGE, [*page_cols[:-1], "position", "ts"]].reset_index(drop=True)
    return req, imp, shuffle_and_respond(sim, req, imp, explore, rng)


def judge_unions(sim: Simulator, strategies: dict, feats: DailyFeatures, hreq: pd.DataFrame, asof_day: int,
                 oracle_day: int, scorers: dict[str, Any], args) -> dict[str, list[float]]:
    """Oracle NDCG@10 per sampled request of ``hreq``: the union of all strategies' candidates ordered by each
    scorer (a model, or the retrieval score under the name ``retrieval_score``)."""
    sample = np.sort(np.random.default_rng([args.seed, 3003]).choice(len(hreq), size=min(args.eval_requests,
                                                                                           len(hreq)), replace=False))
    frames = []
    for i in sample:
        r = hreq.iloc[i]
        ctx = {"request_id": r.request_id, "device": r.device, "hour": int(r.hour), "user_id": r.user_id}
        seen: dict[str, Any] = {}
        for s in STRATEGIES:
            for c in candidates(strategies, r.query_norm, ctx, s, args.budget):
                seen.setdefault(c.item_id, c)
        f = candidate_scores(strategies, r.query_norm, list(seen.values()))
        f["request_id"], f["query_norm"], f["query"] = r.request_id, r.query_norm, r.query
        frames.append(f)
    union = pd.concat(frames, ignore_index=True)
    union = with_item_features(union, feats, np.full(len(union), asof_day))
    X = ranker_frame(union)
    scores = {name: (union["retrieval_score"].to_numpy() if m == "retrieval_score" else m.score(X))
              for name, m in scorers.items()}
    nd: dict[str, list[float]] = {name: [] for name in scores}
    day = sim.day(oracle_day)
    for _, g in union.groupby("request_id", sort=False):
        q, ids = g["query"].iloc[0], g["item_id"].to_numpy()
        for name, sc in scores.items():
            nd[name].append(sim.oracle.ndcg(q, list(ids[np.argsort(-sc[g.index], kind="stable")]), k=10,
                                            as_of=day))
    return nd


def feedback_loop(sim: Simulator, strategies: dict, feats: DailyFeatures, champion: Any, start: pd.Timestamp,
                  args) -> dict[str, Any]:
    """Log ``--loop-days`` days in the champion's order, train challengers on those clicks, judge them."""
    N, L = args.days, args.loop_days
    rng = np.random.default_rng([args.seed, 5005])
    logs = []
    for d in range(N, N + L + 1):   # L logged days + the judged day after them
        logs.append(log_day_ranked(sim, strategies, d, args.budget, args.explore_rate, rng, champion, feats, N))
        progress(f"loop: day {d} served in the champion's order")
    req = pd.concat([x[0] for x in logs[:L]], ignore_index=True)
    imp = pd.concat([x[1] for x in logs[:L]], ignore_index=True)
    eng = pd.concat([x[2] for x in logs[:L]], ignore_index=True)
    lr = label_ranker(imp, req, attributed(imp, eng), start + (N + L) * DAY)
    lr = with_item_features(lr, feats, np.full(len(lr), N))
    eta = position_bias_eta(lr, 30)
    models, train_s = {}, {}
    for deb in ("none", "ips", "unbiased"):
        t = time.perf_counter()
        models[deb] = RANKER.train(lr, {"objective": "rank:ndcg", "debias": deb})
        train_s[deb] = time.perf_counter() - t
    # Clicks by position on the champion's (unshuffled) pages: how strongly they concentrate at the top.
    served = lr[~lr["position_randomized"].astype(bool)]
    ctr_by_pos = (served["label"] > 0).groupby(served["position"]).mean()
    nd = judge_unions(sim, strategies, feats, logs[L][0], N, N + L - 1,
                      {"champion": champion, **{f"rank:ndcg|{d}": m for d, m in models.items()},
                       "retrieval_score": "retrieval_score"}, args)
    base = nd["rank:ndcg|none"]
    res = {name: {"oracle_ndcg@10": float(np.mean(v)), "vs_ndcg_none": paired(v, base),
                  "vs_ips": paired(v, nd["rank:ndcg|ips"]), "vs_champion": paired(v, nd["champion"])}
           for name, v in nd.items()}
    for deb, m in models.items():
        res[f"rank:ndcg|{deb}"].update(train_seconds=train_s[deb], meta=m.meta)
    for name, r in res.items():
        progress(f"loop {name}: oracle NDCG@10 {r['oracle_ndcg@10']:.4f} (vs none {r['vs_ndcg_none']['diff']:+.4f} "
                 f"+- {r['vs_ndcg_none']['se']:.4f}; vs champion {r['vs_champion']['diff']:+.4f})")
    ips, raw, unb = res["rank:ndcg|ips"]["vs_ndcg_none"], res["rank:ndcg|none"], res["rank:ndcg|unbiased"]["vs_ips"]
    return {"loop_days": L, "training_requests": int(lr["request_id"].nunique()), "fitted_eta": eta,
            "click_rate_by_position_champion_pages": {int(k): float(v) for k, v in ctr_by_pos.items()},
            "champion_meta": champion.meta, "models": res,
            "ips_beats_raw": bool(ips["diff"] > 2 * ips["se"]),
            "raw_beats_ips": bool(ips["diff"] < -2 * ips["se"]),
            "unbiased_beats_ips": bool(unb["diff"] > 2 * unb["se"]),
            "raw_oracle_ndcg@10": raw["oracle_ndcg@10"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--days", type=int, default=6)
    ap.add_argument("--holdout-days", type=int, default=1)
    ap.add_argument("--requests-per-day", type=int, default=1500)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--explore-rate", type=float, default=0.1, help="share of pages shuffled (the scorer's default)")
    ap.add_argument("--eval-requests", type=int, default=600)
    ap.add_argument("--loop-days", type=int, default=3, help="days served by a champion ranker (0: skip)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ranker.json")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    cfg = SimConfig(seed=args.seed, n_items=args.items, requests_per_day=args.requests_per_day)
    sim = Simulator(cfg)
    N, H = args.days, args.holdout_days
    start = pd.Timestamp(cfg.start, tz="UTC")
    catalog = sim.catalog_events(sim.day(0))
    catalog["created_at"] = pd.to_datetime(catalog["created_at"], utc=True)
    # Strategies built once on the initial catalog (no q2e memory): this benchmark is about the ranker.
    strategies = build_strategies(catalog, None, None, None, seed=args.seed)
    rng = np.random.default_rng([args.seed, 4004])
    logs = [log_day(sim, strategies, d, args.budget, args.explore_rate, rng) for d in range(N + H)]
    requests = pd.concat([x[0] for x in logs], ignore_index=True)
    impressions = pd.concat([x[1] for x in logs], ignore_index=True)
    engagements = pd.concat([x[2] for x in logs], ignore_index=True)
    progress(f"logged {N + H} days: {len(requests)} requests, {len(impressions)} impressions")
    cutoff = start + N * DAY
    att = attributed(impressions, engagements)
    dim_items = catalog.drop(columns=["event_id"]).assign(event_timestamp=catalog["created_at"])
    feats = DailyFeatures(start, requests, impressions, att, dim_items, cutoff)
    lr = label_ranker(impressions, requests, att, cutoff)
    lr_train = with_item_features(lr[lr["day"] < N], feats, lr.loc[lr["day"] < N, "day"].to_numpy())
    lr_hold = label_ranker(impressions, requests, att, None)
    lr_hold = with_item_features(lr_hold[lr_hold["day"] >= N], feats, np.full(int((lr_hold["day"] >= N).sum()), N))
    eta_true = {dev: d for dev, d in cfg.examination_decay.items()}
    eta_fit = position_bias_eta(lr_train, 30)
    progress(f"training rows {len(lr_train)}; fitted eta {eta_fit:.3f} (simulator decay by device {eta_true})")

    models, train_s = {}, {}
    for name, params in TRAINERS.items():
        t = time.perf_counter()
        models[name] = RANKER.train(lr_train, params)
        train_s[name] = time.perf_counter() - t

    # judge: candidate unions of sampled holdout requests, oracle NDCG@10
    hreq = requests[requests["day"] >= N].reset_index(drop=True)
    nd = judge_unions(sim, strategies, feats, hreq, N, N - 1,
                      {**models, "retrieval_score": "retrieval_score"},
                      args)
    sample_size = len(nd["retrieval_score"])
    base = nd["rank:ndcg|none"]
    res = {}
    for name, model in models.items():
        ev = RANKER.evaluate(model, lr_hold)
        res[name] = {"oracle_ndcg@10": float(np.mean(nd[name])), "vs_ndcg_none": paired(nd[name], base),
                     "ips_click_ndcg@10_holdout": ev["ndcg@10"], "train_seconds": train_s[name],
                     "params": TRAINERS[name], "meta": model.meta}
        progress(f"{name}: oracle NDCG@10 {res[name]['oracle_ndcg@10']:.4f} (vs ndcg|none "
                 f"{res[name]['vs_ndcg_none']['diff']:+.4f} +- {res[name]['vs_ndcg_none']['se']:.4f}); IPS click "
                 f"NDCG {ev['ndcg@10']:.4f}")
    best = max(res, key=lambda k: res[k]["oracle_ndcg@10"])
    loop = None
    if args.loop_days > 0:
        champion = models[f"{RANKER.default_params['objective']}|{RANKER.default_params['debias']}"]
        loop = feedback_loop(sim, strategies, feats, champion, start, args)
    out = {
        "benchmark": "ranker",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_info(),
        "inputs": {"days": N, "holdout_days": H, "requests_per_day": args.requests_per_day, "items": args.items,
                   "seed": args.seed, "explore_rate": args.explore_rate, "eval_requests": sample_size, "loop_days": args.loop_days,
                   "python": platform.python_version()},
        "position_bias": {"fitted_eta": eta_fit, "simulator_decay_by_device": eta_true},
        "models": res,
        "retrieval_score_oracle_ndcg@10": float(np.mean(nd["retrieval_score"])),
        "best_by_oracle_ndcg": best,
        "feedback_loop": loop,
        "family_default": f"{RANKER.default_params['objective']}|{RANKER.default_params['debias']}",
        "wall_seconds": time.perf_counter() - _T0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r4(out), indent=2, default=str) + "\n")
    progress(f"wrote {args.out}; best {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
