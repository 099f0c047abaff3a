"""Attributes benchmark: extract the simulator's HIDDEN catalog attributes, per-level vs one global threshold.

World. The simulator's catalog hides 30% of brand/color/material values (None); ``Simulator.true_items()``
knows them. By default the catalog text carries real-catalog color noise (``NOISY_TEXT``: shade names, some
filed under two base colors, feed codes and typos in ~12% of titles, "Black/White" in ~12%, a distractor
color in ~15% of descriptions; see "Text noise" in ``ml/sim/__init__.py``); ``--clean-text`` is the same
world with every color spelled plainly and no distractor (results in ``attributes_clean.json``).

Protocol (no threshold ever sees the test truth):

* train: the family fits each extractor on ``1 - calibration_share`` of the items whose value is KNOWN;
* calibration: the other known items; both the per-level thresholds and the one global threshold are chosen
  there by the same rule (lowest confidence whose precision's Wilson lower bound reaches the target);
* test: the HIDDEN values (never used by the family), judged against the truth.

Per attribute on the test split: precision, recall (share of hidden values filled correctly) and coverage at
the per-level thresholds and at the global one, with bootstrap 95% CIs over the hidden items, and the paired
bootstrap CI of the recall difference; per level the test accuracy and precision at its threshold; the
calibrated probability's reliability (ECE). The verdict is computed from the numbers. A PNG per run shows,
per level, precision against recall as the threshold moves (calibration and test) and the reliability curve.

    .venv/bin/python bench/bench_attributes.py [--items 3000] [--seed 7] [--clean-text] [--no-plot]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.families.attributes import FAMILY, LEVELS, NEVER, frame_texts
from ml.sim.config import SimConfig
from ml.sim.simulator import Simulator

# Real-catalog color noise (ml/sim "Text noise"); rates chosen from what catalogs do, not tuned to the target.
NOISY_TEXT = {"title_color_variant_share": 0.2, "title_second_color_share": 0.2, "description_distractor_share": 0.15}
RESULTS = Path(__file__).parent / "results"


def at(correct: np.ndarray, accepted: np.ndarray) -> dict[str, float]:
    return {"precision": float(correct[accepted].mean()) if accepted.any() else float("nan"),
            "recall": float((correct & accepted).mean()) if len(correct) else 0.0,
            "coverage": float(accepted.mean()) if len(correct) else 0.0, "n_filled": int(accepted.sum())}


def bootstrap(correct: np.ndarray, acc_level: np.ndarray, acc_global: np.ndarray, resamples: int, seed: int
              ) -> dict[str, list[float]]:
    """95% percentile CIs over resampled hidden items: precision/recall per scheme, paired recall difference."""
    rng = np.random.default_rng(seed)
    n = len(correct)
    draws: dict[str, list[float]] = {k: [] for k in ("precision_level", "recall_level", "precision_global",
                                                     "recall_global", "recall_diff")}
    for _ in range(resamples):
        i = rng.integers(0, n, size=n)
        c, lv, gl = correct[i], acc_level[i], acc_global[i]
        draws["precision_level"].append(c[lv].mean() if lv.any() else np.nan)
        draws["precision_global"].append(c[gl].mean() if gl.any() else np.nan)
        draws["recall_level"].append((c & lv).mean())
        draws["recall_global"].append((c & gl).mean())
        draws["recall_diff"].append((c & lv).mean() - (c & gl).mean())
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] if not np.all(np.isnan(v))
            else [float("nan")] * 2 for k, v in draws.items()}


def ece(prob: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of ``prob`` as P(correct), equal-width bins."""
    ok = ~np.isnan(prob)
    prob, correct = prob[ok], correct[ok]
    if len(prob) == 0:
        return float("nan")
    b = np.minimum((prob * bins).astype(int), bins - 1)
    return float(sum(abs(prob[b == k].mean() - correct[b == k].mean()) * (b == k).mean()
                     for k in range(bins) if (b == k).any()))


def pr_curve(conf: np.ndarray, correct: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall (over ``n_total``) and precision as the threshold sweeps down the confidences."""
    order = np.argsort(-conf, kind="stable")
    k = np.cumsum(correct[order])
    return k / max(n_total, 1), k / np.arange(1, len(order) + 1)


def plot(path: Path, curves: dict, target: float, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = list(curves)
    fig, axes = plt.subplots(len(attrs), 3, figsize=(17, 4.2 * len(attrs)), squeeze=False)
    colors = dict(zip(LEVELS, plt.cm.tab10.colors))
    for row, a in enumerate(attrs):
        pooled, ax, rel = axes[row]
        c = curves[a]
        # all hidden values: admitted in calibrated-probability order (per-level) vs confidence order (global)
        ok_all = c["test_correct"]
        for key, label, color in (("test_probability", "per-level (calibrated probability order)", "C0"),
                                  ("test_confidence", "global (confidence order)", "C3")):
            r, p = pr_curve(c[key], ok_all, len(ok_all))
            pooled.plot(r, p, color=color, lw=1.5, label=label)
        for acc, label, color in ((c["accepted_level"], "per-level thresholds", "C0"),
                                  (c["accepted_global"], "global threshold", "C3")):
            if acc.any():
                pooled.plot((ok_all & acc).mean(), ok_all[acc].mean(), "o", color=color, ms=9, mec="k",
                            label=f"{label}: P {ok_all[acc].mean():.3f} R {(ok_all & acc).mean():.3f}")
        pooled.axhline(target, color="k", lw=0.8, ls=":")
        pooled.set(xlabel="recall (hidden values filled correctly)", ylabel="precision", ylim=(0.5, 1.01),
                   xlim=(0, 1), title=f"{a}: hidden values, thresholds from the calibration split")
        pooled.legend(fontsize=7, loc="lower left")
        for name in LEVELS:
            for split, style in (("calibration", "--"), ("test", "-")):
                d = c[split].get(name)
                if d is None or len(d["conf"]) < 5:
                    continue
                r, p = pr_curve(d["conf"], d["correct"], len(d["conf"]))
                ax.plot(r, p, style, color=colors[name], lw=1.4,
                        label=f"{name} ({split}, n={len(d['conf'])})" if split == "test" or name == LEVELS[0]
                        else None)
            thr = c["thresholds"][name]
            d = c["test"].get(name)
            if d is not None and thr != NEVER and len(d["conf"]):
                adm = d["conf"] >= thr
                if adm.any():
                    ax.plot(d["correct"][adm].sum() / len(d["conf"]), d["correct"][adm].mean(), "o",
                            color=colors[name], ms=8, mec="k")
        ax.axhline(target, color="k", lw=0.8, ls=":")
        ax.set(xlabel="recall within the level (share of its items filled correctly)", ylabel="precision",
               ylim=(0.0, 1.02), xlim=(0, 1), title=f"{a}: per level (dashed: calibration, solid: hidden; dot: chosen)")
        ax.legend(fontsize=7, loc="lower left")
        prob, ok = c["test_probability"], c["test_correct"]
        keep = ~np.isnan(prob)
        edges = np.linspace(0, 1, 11)
        b = np.clip(np.digitize(prob[keep], edges) - 1, 0, 9)
        xs = [prob[keep][b == k].mean() for k in range(10) if (b == k).sum() >= 5]
        ys = [ok[keep][b == k].mean() for k in range(10) if (b == k).sum() >= 5]
        rel.plot([0, 1], [0, 1], color="grey", lw=0.8)
        rel.plot(xs, ys, "o-", color="C0", label="calibrated probability")
        conf = c["test_confidence"]
        bc = np.clip(np.digitize(conf, edges) - 1, 0, 9)
        rel.plot([conf[bc == k].mean() for k in range(10) if (bc == k).sum() >= 5],
                 [ok[bc == k].mean() for k in range(10) if (bc == k).sum() >= 5], "s--", color="C3",
                 label="raw ensemble confidence")
        rel.set(xlabel="predicted P(correct)", ylabel="observed accuracy (test)", xlim=(0, 1), ylim=(0, 1),
                title=f"{a}: reliability on the hidden values (bins with >= 5)")
        rel.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate_seed(args: argparse.Namespace, seed: int) -> dict:
    """Train on one simulated catalog (``seed``) and judge every attribute on its hidden values."""
    t0 = time.perf_counter()
    noise = {} if args.clean_text else NOISY_TEXT
    sim = Simulator(SimConfig(seed=seed, n_items=args.items, **noise))
    catalog = pd.concat([sim.catalog_events(sim.day(k)) for k in range(args.days + 1)], ignore_index=True)
    truth = sim.true_items().set_index("item_id")
    params = {"target_precision": args.target_precision, "n_bootstrap": args.bootstrap,
              "precision_z": args.precision_z, "calibration_share": args.calibration_share}
    model = FAMILY.train(catalog, params)
    wall_train = time.perf_counter() - t0

    per_attr, verdicts, curves = {}, [], {}
    for a, ex in model.extractors.items():
        hidden = catalog[catalog[a].isna()]
        true_v = truth.loc[hidden["item_id"], a].astype(str).to_numpy()
        res = ex.extract(frame_texts(hidden))
        correct = res["value"].to_numpy(dtype=object) == true_v
        conf = res["confidence"].to_numpy()
        lvl = res["level"].map({n: i for i, n in enumerate(LEVELS)}).to_numpy()
        acc_level = res["accepted"].to_numpy(dtype=bool)
        acc_global = conf >= ex.global_threshold
        per_level, glob = at(correct, acc_level), at(correct, acc_global)
        ci = bootstrap(correct, acc_level, acc_global, args.resamples, seed)
        majority = ex.meta["majority_value"]
        by_level = {}
        for j, name in enumerate(LEVELS):
            m = lvl == j
            adm = m & acc_level
            by_level[name] = {
                "n_test": int(m.sum()), "test_accuracy": float(correct[m].mean()) if m.any() else None,
                "threshold": None if ex.thresholds[name] == NEVER else ex.thresholds[name],
                "test_filled": int(adm.sum()), "test_precision": float(correct[adm].mean()) if adm.any() else None,
                "calibration": ex.meta["levels"][name],
            }
        prob = res["probability"].to_numpy(dtype=float)
        per_attr[a] = {
            "n_hidden": len(hidden), "n_train": ex.meta["n_train"], "n_calibration": ex.meta["n_calibration"],
            "per_level": per_level, "global": glob, "ci95": ci,
            "argmax_accuracy": float(correct.mean()), "majority_value": majority,
            "majority_accuracy": float((true_v == majority).mean()), "levels": by_level,
            "global_threshold": None if ex.global_threshold == NEVER else ex.global_threshold,
            "calibration_split": {k: ex.meta[k] for k in ("validation_precision", "validation_precision_global",
                                                         "validation_recall", "validation_recall_global",
                                                         "target_met", "global_target_met")},
            "ece_probability": ece(prob, correct), "ece_confidence": ece(conf, correct),
            "abstains": bool(per_level["coverage"] == 0.0),
        }
        if a == "color":
            per_attr[a]["coverage_title_mentions_color"] = float(
                acc_level[truth.loc[hidden["item_id"], "title_has_color"].to_numpy()].mean())
        filling = per_level["coverage"] > 0
        verdicts.append({
            "attribute": a, "fills": bool(filling),
            "precision_ge_target": (not filling) or per_level["precision"] >= args.target_precision,
            "precision_ci_reaches_target": (not filling) or ci["precision_level"][1] >= args.target_precision,
            "global_precision_ge_target": glob["coverage"] == 0 or glob["precision"] >= args.target_precision,
            "beats_majority_or_abstains": (not filling) or per_level["precision"] > per_attr[a]["majority_accuracy"],
            "per_level_recall_gt_global": per_level["recall"] > glob["recall"],
            "recall_gain_significant": bool(ci["recall_diff"][0] > 0),
            "recall_not_significantly_lower": bool(ci["recall_diff"][1] >= 0),
        })
        rows = ex.calibration_rows
        curves[a] = {
            "thresholds": ex.thresholds, "test_probability": prob, "test_correct": correct, "test_confidence": conf,
            "accepted_level": acc_level, "accepted_global": acc_global,
            "test": {n: {"conf": conf[lvl == j], "correct": correct[lvl == j]} for j, n in enumerate(LEVELS)},
            "calibration": {n: {"conf": rows["confidence"].to_numpy()[rows["level"].to_numpy() == j],
                                "correct": rows["correct"].to_numpy()[rows["level"].to_numpy() == j]}
                            for j, n in enumerate(LEVELS)} if rows is not None else {},
        }

    filling = [v for v in verdicts if v["fills"]]
    target = {
        "claim": f"at {args.target_precision:.0%} precision (thresholds chosen on the calibration split), per-level "
                 "thresholds recall more than one global threshold on the hidden (test) values",
        "recall_gain_significant_any": any(v["recall_gain_significant"] for v in filling),
        "recall_not_significantly_lower_all": all(v["recall_not_significantly_lower"] for v in filling),
        "precision_ge_target_all_filling": all(v["precision_ge_target"] for v in filling),
        "precision_ci_reaches_target_all_filling": all(v["precision_ci_reaches_target"] for v in filling),
        "beats_majority_or_abstains_all": all(v["beats_majority_or_abstains"] for v in verdicts),
    }
    target["pass"] = bool(filling and target["recall_gain_significant_any"]
                          and target["recall_not_significantly_lower_all"]
                          and target["precision_ge_target_all_filling"])
    return {"seed": seed, "n_items": len(catalog), "params": params, "per_attribute": per_attr,
            "verdicts": verdicts, "target": target, "curves": curves,
            "wall_seconds": {"train": wall_train, "total": time.perf_counter() - t0}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=3000,
                    help="initial catalog size (3000: ~630 calibration values per attribute)")
    ap.add_argument("--days", type=int, default=0, help="also include the items created on this many later days")
    ap.add_argument("--seed", type=int, default=7, help="the world whose numbers decide the verdict")
    ap.add_argument("--robustness-seeds", default="8,9,10",
                    help="other worlds, summarized beside the verdict (comma-separated; '' for none)")
    ap.add_argument("--target-precision", type=float, default=0.95)
    ap.add_argument("--bootstrap", type=int, default=FAMILY.default_params["n_bootstrap"], help="ensemble size")
    ap.add_argument("--precision-z", type=float, default=FAMILY.default_params["precision_z"],
                    help="Wilson lower bound z: a threshold needs lower(precision) >= target on the calibration split")
    ap.add_argument("--calibration-share", type=float, default=FAMILY.default_params["calibration_share"],
                    help="share of the known values held out of the fit to choose the thresholds")
    ap.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the CIs")
    ap.add_argument("--clean-text", action="store_true",
                    help="no text noise (every color spelled plainly); writes attributes_clean.json")
    ap.add_argument("--no-plot", action="store_true", help="skip the PNG")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/attributes[_clean].json)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.out is None:
        args.out = RESULTS / ("attributes_clean.json" if args.clean_text else "attributes.json")
    noise = {} if args.clean_text else NOISY_TEXT
    world = "clean text" if args.clean_text else "noisy text (NOISY_TEXT)"

    main_run = evaluate_seed(args, args.seed)
    per_attr, target = main_run["per_attribute"], main_run["target"]
    robustness = []
    for seed in [int(x) for x in str(args.robustness_seeds).split(",") if x.strip()]:
        r = evaluate_seed(args, seed)
        robustness.append({"seed": seed, "pass": r["target"]["pass"], **{
            a: {"per_level": {k: v["per_level"][k] for k in ("precision", "recall")},
                "global": {k: v["global"][k] for k in ("precision", "recall")}, "recall_diff_ci95": v["ci95"]["recall_diff"]}
            for a, v in r["per_attribute"].items() if v["per_level"]["coverage"] > 0 or v["global"]["coverage"] > 0}})
    out = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "world": {"text": world, **{k: float(v) for k, v in noise.items()}},
           "params": {**{k: FAMILY.default_params[k] for k in ("min_support", "min_marginal_precision",
                                                              "min_level_support", "calibration_C")},
                      **main_run["params"]},
           "n_items": main_run["n_items"], "per_attribute": per_attr, "verdicts": main_run["verdicts"],
           "target": target, "robustness": robustness,
           "robustness_pass_share": (sum(r["pass"] for r in robustness) / len(robustness)) if robustness else None,
           "wall_seconds": {**main_run["wall_seconds"], "all_seeds": time.perf_counter() - t0}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        png = args.out.with_suffix(".png")
        curves = main_run["curves"]
        plot(png, {a: c for a, c in curves.items() if per_attr[a]["per_level"]["coverage"] > 0 or a == "color"},
             args.target_precision, f"attributes on {world}, seed {args.seed}, {main_run['n_items']} items; "
             "thresholds chosen on the calibration split, judged on the hidden values")
        out["plot"] = str(png.relative_to(Path(__file__).parent)) if png.is_relative_to(Path(__file__).parent) \
            else str(png)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    for a, r in per_attr.items():
        pl, g, ci = r["per_level"], r["global"], r["ci95"]
        print(f"{a:9s} per-level P {pl['precision']:.3f} [{ci['precision_level'][0]:.3f}, {ci['precision_level'][1]:.3f}]"
              f" R {pl['recall']:.3f} C {pl['coverage']:.3f} | global P {g['precision']:.3f} R {g['recall']:.3f} | "
              f"diff R {pl['recall'] - g['recall']:+.3f} [{ci['recall_diff'][0]:+.3f}, {ci['recall_diff'][1]:+.3f}] | "
              f"majority {r['majority_accuracy']:.3f} | ECE {r['ece_probability']:.3f} (raw {r['ece_confidence']:.3f})")
        print("          levels: " + "  ".join(
            f"{n} n={v['n_test']} acc={v['test_accuracy'] if v['test_accuracy'] is None else round(v['test_accuracy'], 2)}"
            f" thr={'-' if v['threshold'] is None else round(v['threshold'], 2)}" for n, v in r["levels"].items()))
    print("target:", json.dumps(target))
    for r in robustness:
        c = r.get("color")
        if c:
            print(f"seed {r['seed']}: color per-level P {c['per_level']['precision']:.3f} R {c['per_level']['recall']:.3f}"
                  f" | global P {c['global']['precision']:.3f} R {c['global']['recall']:.3f} | pass {r['pass']}")
    print(f"wrote {args.out} ({out['wall_seconds']['all_seeds']:.0f} s)")
    return out


if __name__ == "__main__":
    main()
