"""The simulator benchmarks still run, at a size that takes seconds.

``make bench`` is not run by CI, and a change to a shared interface once broke ``bench_bandit.py`` silently for a
stop (the lazy candidate lists, issue 6). These run each benchmark's own script, as a user does, on tiny worlds and
check what holds whatever the size: the script exits 0, writes its JSON with every target flagged, and the numbers
keep the orderings that hold by construction. They do not check the targets themselves: that is ``make bench``'s job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def run_bench(script: str, out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_bench_bandit_runs_and_its_baselines_are_ordered(tmp_path):
    res = run_bench("bench_bandit.py", tmp_path / "bandit.json", "--days", "3", "--requests-per-day", "150",
                    "--ope-decisions", "300", "--ope-replicates", "1", "--ope-bootstrap", "20",
                    "--throughput-decisions", "0", "--shadows", "single:mtr")
    assert {t["target"] for t in res["targets"]} >= {"reward >= 1.10 x best static", "regret <= 0.5 x uniform",
                                                    "favoured strategy per query type = Simulator.BEST_STRATEGY"}
    assert all(isinstance(t["pass"], bool) for t in res["targets"])
    tot = res["cumulative_reward"]
    # the oracle picks, per query type, the plan with the best total: no fixed plan and no mix of singles beats it;
    # the per-request best in hindsight bounds every policy
    for other in ("best_static_hindsight", "union_all_strategies", "uniform_over_strategies"):
        assert tot["oracle_query_type_plan"] >= tot[other]
    for policy in ("learned", "shadow_single_mtr", "oracle_query_type_plan"):
        assert tot[policy] <= tot["per_request_best_hindsight"]
    fav = next(t for t in res["targets"] if t["target"].startswith("favoured"))
    assert set(fav["favoured"]) == set(fav["oracle_policy_passes_this_rule"]) == set(fav["single_offer"])
    for offer in fav["single_offer"].values():
        assert sum(offer["fraction"].values()) == pytest.approx(1.0, abs=1e-3)


def test_bench_q2e_and_ranker_run(tmp_path):
    q2e = run_bench("bench_q2e.py", tmp_path / "q2e.json", "--days", "2", "--holdout-days", "2",
                    "--requests-per-day", "200")
    assert q2e["targets"] and all(isinstance(t["pass"], bool) for t in q2e["targets"])
    ranker = run_bench("bench_ranker.py", tmp_path / "ranker.json", "--days", "3", "--requests-per-day", "600",
                       "--eval-requests", "150", "--loop-days", "1")
    assert ranker["models"] and ranker["feedback_loop"]
