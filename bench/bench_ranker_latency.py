"""Scoring latency of the ranker for one request's candidates, as the scorer does it.

Not a test (see ../shared/STYLE.md): it measures and writes ``bench/results/ranker_latency.json``.

The models are the real families' models trained on synthetic rows with the family defaults (the ranker's 100
trees of depth 3, the conversion model's 200 rounds of depth 4 + calibrator), saved and loaded with
``FAMILY.save``/``FAMILY.load`` so they run with the thread count serving sets (``nthread=1``). A request's
candidates arrive as the frame ``serving.scorer._rank_scores`` builds (retrieval scores, strategy, Feast features,
``attr_match``); what is timed, per request of ``--candidates`` rows:

* ``model_only``: ``RankerModel.score`` on a ready float matrix frame;
* ``frame_and_model``: ``ranker_frame(candidates)`` + ``score``;
* ``conversion_frame_and_model``: ``conversion_feature`` (the conversion model's prediction, a ranker feature) +
  ``ranker_frame`` + ``score``: what ``_rank_scores`` does after its online-store lookups.

Target (issue 4): 100 candidates in < 1 ms median for what serving does (the last line). Online-store lookups
(Feast) are not included: they are I/O, measured with the scorer.

Run: ``.venv/bin/python bench/bench_ranker_latency.py`` (~20 s). Numbers taken on a shared, loaded machine are
inflated: rerun on a quiet one.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_families import git_info, r4
from ml.events.schema import STRATEGIES
from ml.families.conversion import FAMILY as CONVERSION
from ml.families.ranker import FAMILY as RANKER
from ml.families.ranker import conversion_feature, ranker_frame
from ml.features import (
    CONVERSION_FEATURE,
    DEFAULTS,
    ITEM_FEATURES,
    QUERY_ITEM_FEATURES,
    RANKER_FEATURES,
    RETRIEVAL_FEATURES,
)


def candidates(n: int, rng: np.random.Generator, request: str = "r0") -> pd.DataFrame:
    """A request's candidate frame as ``_rank_scores`` holds it before ``ranker_frame``."""
    frame = pd.DataFrame({f: rng.random(n) for f in RETRIEVAL_FEATURES})
    frame.insert(0, "item_id", [f"i{j}" for j in range(n)])
    frame["strategy"] = rng.choice(list(STRATEGIES), size=n)
    for f in DEFAULTS:
        if f not in frame.columns:
            frame[f] = rng.random(n) if f not in ("category", "brand", "color", "material") else "x"
    frame["attr_match"] = rng.integers(0, 3, n).astype(float)
    frame["request_id"], frame["position"] = request, np.arange(1, n + 1)
    return frame


def train_models(rng: np.random.Generator, tmp: Path):
    n_req, n = 300, 20
    rows = pd.concat([candidates(n, rng, f"r{q}") for q in range(n_req)], ignore_index=True)
    rows["label"] = (rows["lexical_score"] + rows["i_ctr"] > 1.2).astype(int) * rng.integers(1, 4, len(rows))
    rows[CONVERSION_FEATURE] = rng.random(len(rows))
    ranker = RANKER.train(rows, {"debias": "none"})
    RANKER.save(ranker, tmp / "ranker")
    conv_rows = rows.sample(3000, random_state=0).reset_index(drop=True)
    conv_rows = conv_rows.assign(
        converted_observed=(rng.random(3000) < 0.1 + 0.2 * conv_rows["i_purchase_rate"]).astype(int),
        matured=1, elapsed_hours=300.0, purchase_delay_hours=10.0, has_atc=0)
    conv = CONVERSION.train(conv_rows, {})
    CONVERSION.save(conv, tmp / "conversion")
    return RANKER.load(tmp / "ranker"), CONVERSION.load(tmp / "conversion")


def timeit(fn, repeats: int) -> dict[str, float]:
    for _ in range(min(50, repeats)):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter_ns()
        fn()
        times[i] = (time.perf_counter_ns() - t) / 1e6
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.quantile(times, 0.9)),
            "p99_ms": float(np.quantile(times, 0.99)), "mean_ms": float(times.mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ranker_latency.json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="ltrr-latency-") as tmp:
        ranker, conv = train_models(rng, Path(tmp))
    cand = candidates(args.candidates, rng)
    cand[CONVERSION_FEATURE] = conversion_feature(conv, cand)
    X = ranker_frame(cand)

    def with_conversion() -> np.ndarray:     # serving.scorer._rank_scores after its lookups
        return ranker.score(ranker_frame(cand, {CONVERSION_FEATURE: conversion_feature(conv, cand)}))

    results = {
        "model_only": timeit(lambda: ranker.score(X), args.repeats),
        "frame_and_model": timeit(lambda: ranker.score(ranker_frame(cand)), args.repeats),
        "conversion_only": timeit(lambda: conversion_feature(conv, cand), args.repeats),
        "conversion_frame_and_model": timeit(with_conversion, args.repeats),
    }
    for k, v in results.items():
        print(f"[bench_ranker_latency] {k}: median {v['median_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms",
              file=sys.stderr)
    serving = results["conversion_frame_and_model"]["median_ms"]
    out = {
        "benchmark": "ranker_latency",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_info(),
        "inputs": {"candidates": args.candidates, "repeats": args.repeats, "ranker_features": len(RANKER_FEATURES),
                   "ranker_trees": int(RANKER.default_params["n_estimators"]),
                   "ranker_max_depth": int(RANKER.default_params["max_depth"]),
                   "conversion_rounds": int(CONVERSION.default_params["num_boost_round"]),
                   "conversion_features": len(conv.feature_names),
                   "item_and_query_item_features": len(ITEM_FEATURES) + len(QUERY_ITEM_FEATURES),
                   "threads": 1, "python": platform.python_version(), "cpu_count": os.cpu_count(),
                   "load_average": list(os.getloadavg())},
        "results": results,
        "targets": [{"target": f"{args.candidates} candidates scored in < 1 ms median (conversion feature + "
                               "ranker_frame + score, what serving does per request after its lookups)",
                     "measured": serving, "threshold": 1.0, "pass": bool(serving < 1.0)}],
        "pass": bool(serving < 1.0),
        "note": "measured on a shared 2-core machine under other engineers' load: rerun on a quiet one",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r4(out), indent=2) + "\n")
    print(f"[bench_ranker_latency] wrote {args.out}: {'pass' if out['pass'] else 'FAIL'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
