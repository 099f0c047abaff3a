"""`ltrr ope` on files with a known answer: a synthetic logged bandit whose target-policy value is exact, and a
registered bandit model; bad files exit with code 2 and a message, never a traceback."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ltrr.cli import app

runner = CliRunner()
K = 3
ACTIONS = ["a", "b", "c"]


def _world(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    color = np.where(rng.random(n) < 0.5, "red", "blue")
    mean = np.column_stack([0.2 + 0.6 * x, 0.7 - 0.4 * x, np.where(color == "red", 0.6, 0.1)])
    mu = np.full((n, K), 1.0 / K)
    chosen = rng.integers(0, K, n)
    reward = (rng.random(n) < mean[np.arange(n), chosen]).astype(float)
    pi = np.full((n, K), 0.05)
    best = mean.argmax(axis=1)
    pi[np.arange(n), best] = 0.9
    truth = float((pi * mean).sum(axis=1).mean())
    logged = pd.DataFrame({"decision_id": [f"d{i}" for i in range(n)], "x": x, "color": color,
                           "action": [ACTIONS[a] for a in chosen], "reward": reward,
                           "propensity": mu[np.arange(n), chosen]})
    target = pd.DataFrame(pi, columns=ACTIONS)
    target.insert(0, "decision_id", logged["decision_id"])
    return logged, target, truth


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ope")
    logged, target, truth = _world(10_000, seed=5)
    logged.to_csv(d / "logged.csv", index=False)
    logged.to_parquet(d / "logged.parquet")
    target.sample(frac=1.0, random_state=0).to_csv(d / "target.csv", index=False)    # joined on decision_id
    return d, truth


def test_table_and_json_recover_the_known_value(files):
    d, truth = files
    out = d / "res.json"
    r = runner.invoke(app, ["ope", str(d / "logged.csv"), "--target-probs", str(d / "target.csv"),
                            "--output", str(out), "--bootstrap", "200"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "DR" in r.output and "SNIPS" in r.output and "IPS" in r.output and "lower" in r.output
    res = json.loads(out.read_text())
    assert res["n_decisions"] == 10_000 and res["n_actions"] == K
    dr = res["estimates"]["dr"]
    assert abs(dr["value"] - truth) / truth < 0.05 and dr["lower"] <= truth <= dr["upper"]
    for name in ("ips", "snips"):
        assert abs(res["estimates"][name]["value"] - truth) / truth < 0.1
    r2 = runner.invoke(app, ["ope", str(d / "logged.parquet"), "--target-probs", str(d / "target.csv"), "--json",
                             "--bootstrap", "200"])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.output)["estimates"]["dr"]["value"] == pytest.approx(dr["value"])


def _bad(d, name, frame):
    path = d / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("case", "message"), [
    ("missing_column", "missing column(s) propensity"),
    ("propensity_zero", "propensities outside (0, 1]"),
    ("propensity_big", "propensities outside (0, 1]"),
    ("probs_not_one", "do not sum to 1"),
    ("unknown_action", "no probability column for logged action"),
    ("no_target", "exactly one target policy"),
    ("bad_format", "unknown format"),
])
def test_bad_files_are_clear_errors(files, case, message):
    d, _ = files
    logged = pd.read_csv(d / "logged.csv").head(200)
    target = pd.read_csv(d / "target.csv").set_index("decision_id").loc[logged["decision_id"]].reset_index()
    args = None
    if case == "missing_column":
        args = [str(_bad(d, "l1.csv", logged.drop(columns=["propensity"]))), "--target-probs", str(d / "target.csv")]
    elif case == "propensity_zero":
        args = [str(_bad(d, "l2.csv", logged.assign(propensity=0.0))), "--target-probs", str(d / "target.csv")]
    elif case == "propensity_big":
        args = [str(_bad(d, "l3.csv", logged.assign(propensity=1.2))), "--target-probs", str(d / "target.csv")]
    elif case == "probs_not_one":
        args = [str(_bad(d, "l5.csv", logged)), "--target-probs", str(_bad(d, "t1.csv", target.assign(a=0.5)))]
    elif case == "unknown_action":
        args = [str(_bad(d, "l4.csv", logged.assign(action="zzz"))), "--target-probs", str(d / "target.csv")]
    elif case == "no_target":
        args = [str(d / "logged.csv")]
    elif case == "bad_format":
        (d / "logged.xlsx").write_text("nope")
        args = [str(d / "logged.xlsx"), "--target-probs", str(d / "target.csv")]
    r = runner.invoke(app, ["ope", *args], env={"COLUMNS": "250"})
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output


def test_registered_model_as_target(tmp_path):
    """Train and register a bandit (it prefers lexical for digit queries), then judge it with --model."""
    from ml.events.schema import STRATEGIES
    from ml.families.base import TrainContext
    from ml.registry import train_and_gate

    rng = np.random.default_rng(0)
    n = 1500
    start = datetime(2024, 1, 3, tzinfo=UTC)
    queries = np.where(rng.random(n) < 0.5, "iphone 13 case", "summer dress")
    chosen = [STRATEGIES[i] for i in rng.integers(0, len(STRATEGIES), n)]
    best = {"iphone 13 case": "lexical", "summer dress": "semantic"}
    p_reward = np.where([best[q] == c for q, c in zip(queries, chosen)], 0.8, 0.2)
    frame = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)],
        "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(np.arange(n) - 1000, unit="min"),
        "query_norm": queries, "device": "mobile", "hour": 9, "strategy": chosen,
        "propensity": 1.0 / len(STRATEGIES), "reward": (rng.random(n) < p_reward).astype(float),
        "policy_version": "uniform",
    })
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = TrainContext(interval_start=start, interval_end=start + pd.Timedelta(days=1), marts_dir=tmp_path)
    d = train_and_gate("bandit", ctx, tracking_uri=uri, reports_dir=tmp_path / "reports", frame=frame)
    assert d.promoted
    logged = frame.rename(columns={"strategy": "action"})[["query_norm", "device", "hour", "action", "reward",
                                                           "propensity"]]
    logged.to_csv(tmp_path / "logged.csv", index=False)
    r = runner.invoke(app, ["ope", str(tmp_path / "logged.csv"), "--model", "ltrr-bandit@champion",
                            "--tracking-uri", uri, "--json", "--bootstrap", "100"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    # the learned policy plays its best plan ~95% of the time: value near 0.8 * 0.95 + 0.2 * 0.05 = 0.77
    assert res["estimates"]["dr"]["value"] > 0.6 > res["logged_mean_reward"]
    bad = runner.invoke(app, ["ope", str(tmp_path / "logged.csv"), "--model", "nonsense", "--tracking-uri", uri])
    assert bad.exit_code == 2 and "NAME@ALIAS" in " ".join(bad.output.split())
