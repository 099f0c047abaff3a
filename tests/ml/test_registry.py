"""ml/registry.py against a real MLflow (SQLite store in tmp): gate, aliases, decision records. No Feast: frame=."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from ml.families.base import GateSpec, TrainContext
from ml.families.ranker import ranker_frame
from ml.registry import champion_versions, gate, load_champion, train_and_gate

INTERVAL_START = datetime(2024, 1, 3, tzinfo=UTC)
N_TRAIN_Q, N_HOLDOUT_Q, N_ITEMS = 60, 30, 10


def _ranker_frame(train_label: str, seed: int = 0) -> pd.DataFrame:
    """Requests before INTERVAL_START train, requests after it are the holdout (identical in every frame).

    True relevance is a function of lexical + semantic score. ``train_label`` says what the training rows
    teach: "good" the truth, "lexical" half of it (a mediocre model), "inverse" the opposite (a bad model).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(N_TRAIN_Q + N_HOLDOUT_Q):
        lex, sem = rng.random(N_ITEMS), rng.random(N_ITEMS)
        truth = np.digitize(lex + sem, [1.0, 1.4, 1.7])
        is_train = q < N_TRAIN_Q
        if is_train and train_label == "lexical":
            label = np.digitize(lex, [0.5, 0.7, 0.85])
        elif is_train and train_label == "inverse":
            label = 3 - truth
        else:
            label = truth
        ts = INTERVAL_START + pd.Timedelta(hours=q - N_TRAIN_Q)
        positions = rng.permutation(N_ITEMS) + 1
        for i in range(N_ITEMS):
            rows.append({
                "request_id": f"r{q}", "event_timestamp": ts, "query_norm": f"q{q % 7}", "item_id": f"i{i}",
                "position": int(positions[i]), "strategy": "lexical", "retrieval_score": 0.0,
                "lexical_score": lex[i], "semantic_score": sem[i], "memory_score": 0.0, "popularity_score": 0.0,
                "label": int(label[i]),
            })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def _template_db(tmp_path_factory) -> Path:
    """An initialised empty MLflow SQLite store, built once (schema migrations take many seconds)."""
    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(tmp_path, _template_db) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(_template_db, home / "mlflow.db")
    ctx = TrainContext(interval_start=INTERVAL_START, interval_end=INTERVAL_START + pd.Timedelta(days=1),
                       marts_dir=home / "marts", params={"n_estimators": 20, "max_depth": 4})
    return {"uri": f"sqlite:///{home / 'mlflow.db'}", "reports": home / "reports", "ctx": ctx, "home": home}


def _run(store, frame, dry_run=False):
    return train_and_gate("ranker", store["ctx"], tracking_uri=store["uri"], reports_dir=store["reports"],
                          dry_run=dry_run, frame=frame)


def _alias(store, alias):
    client = mlflow.MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])
    try:
        return str(client.get_model_version_by_alias("ltrr-ranker", alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def test_first_version_passing_the_floor_is_promoted_and_served(store):
    frame = _ranker_frame("good")
    d = _run(store, frame)

    assert d.promoted and d.passed and d.version == "1"
    assert d.champion_version is None and d.champion_value is None
    assert d.metric == "ndcg@10" and d.challenger_value > 0.9
    assert champion_versions(store["uri"])["ranker"] == "1"
    version, model = load_champion(store["uri"], "ranker")
    assert version == "1" and model.feature_names[0] == "retrieval_score"
    # The pyfunc serving could load scores candidates like the native model.
    mlflow.set_registry_uri(store["uri"])
    pyf = mlflow.pyfunc.load_model("models:/ltrr-ranker@champion")
    np.testing.assert_allclose(pyf.predict(frame.head(10)), model.score(ranker_frame(frame.head(10))))
    # Nothing lands outside the store's folder.
    assert list((store["home"] / "mlartifacts").glob("ltrr-ranker/models/*/artifacts/MLmodel"))
    record = json.loads(Path(d.record_path).read_text())
    assert Path(d.record_path).name == "ranker-2024-01-03-v1.json"
    assert record["promoted"] and record["challenger_value"] == pytest.approx(d.challenger_value)
    run = mlflow.MlflowClient(tracking_uri=store["uri"]).get_run(d.run_id)
    assert run.data.tags["decision"] == "promoted"
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(d.challenger_value)


def test_worse_challenger_is_refused_and_better_one_promoted_with_rollback_alias(store):
    mediocre = _run(store, _ranker_frame("lexical"))
    assert mediocre.promoted and mediocre.version == "1"

    bad = _run(store, _ranker_frame("inverse"))
    assert not bad.promoted and bad.version == "2"
    assert bad.champion_version == "1"
    assert bad.challenger_value < bad.champion_value
    assert bad.champion_value == pytest.approx(mediocre.challenger_value)   # same holdout, same model
    assert _alias(store, "champion") == "1" and _alias(store, "challenger") == "2"
    assert load_champion(store["uri"], "ranker")[0] == "1"
    run = mlflow.MlflowClient(tracking_uri=store["uri"]).get_run(bad.run_id)
    assert run.data.tags["decision"] == "refused" and run.data.tags["reason"] == bad.reason
    assert "champion_ndcg_at_10" in run.data.metrics
    record = json.loads((store["reports"] / "decisions" / "ranker-2024-01-03-v2.json").read_text())
    assert record["promoted"] is False
    assert record["challenger_value"] == pytest.approx(bad.challenger_value)
    assert record["champion_value"] == pytest.approx(bad.champion_value)
    assert record["champion_version"] == "1" and record["reason"] == bad.reason

    good = _run(store, _ranker_frame("good"))
    assert good.promoted and good.version == "3"
    assert good.challenger_value > good.champion_value == pytest.approx(mediocre.challenger_value)
    assert _alias(store, "champion") == "3" and _alias(store, "previous_champion") == "1"
    assert champion_versions(store["uri"]) == {"bandit": None, "ranker": "3", "conversion": None, "q2e": None,
                                               "attributes": None}


def test_dry_run_promotes_nothing(store):
    d = _run(store, _ranker_frame("good"), dry_run=True)
    assert d.passed and not d.promoted and d.dry_run
    assert load_champion(store["uri"], "ranker") is None
    assert _alias(store, "champion") is None and _alias(store, "challenger") is None
    assert json.loads(Path(d.record_path).read_text())["dry_run"] is True


@pytest.mark.parametrize(("spec", "metrics", "champion", "extra", "passed"), [
    (GateSpec("m", "max", floor=0.5), {"m": 0.6}, None, None, True),
    (GateSpec("m", "max", floor=0.5), {"m": 0.4}, None, None, False),
    (GateSpec("m", "max", floor=0.5, min_delta=0.05), {"m": 0.7}, 0.68, None, False),
    (GateSpec("m", "max", floor=0.5, min_delta=0.05), {"m": 0.74}, 0.68, None, True),
    (GateSpec("m", "max", floor=0.0, min_delta=0.0), {"m": 0.68}, 0.68, None, True),
    (GateSpec("m", "min", floor=1.0), {"m": 1.2}, None, None, False),
    (GateSpec("m", "min", floor=1.0, min_delta=0.01), {"m": 0.5}, 0.6, None, True),
    (GateSpec("m", "min", floor=1.0, min_delta=0.01), {"m": 0.6}, 0.5, None, False),
    (GateSpec("m", "max", floor=0.0), {"m": 0.9, "lift": -0.2}, None, {"lift": -0.01}, False),
    (GateSpec("m", "max", floor=0.0), {"m": math.nan}, None, None, False),
])
def test_gate_rule(spec, metrics, champion, extra, passed):
    ok, reason = gate(spec, metrics, champion, extra)
    assert ok is passed and reason


def test_bandit_policy_round_trips_through_the_registry(store):
    """VW workspaces are not picklable: the pyfunc must carry the VW model file and rebuild the policy."""
    from ml.events.schema import STRATEGIES
    from ml.families.bandit import bandit_context

    rng = np.random.default_rng(0)
    n = 1200
    queries = np.where(rng.random(n) < 0.5, "iphone 13 case", "summer dress")
    chosen = [STRATEGIES[i] for i in rng.integers(0, len(STRATEGIES), n)]
    best = {"iphone 13 case": "lexical", "summer dress": "semantic"}
    reward = (rng.random(n) < np.where([best[q] == c for q, c in zip(queries, chosen)], 0.8, 0.2)).astype(float)
    frame = pd.DataFrame({
        "request_id": [f"r{i}" for i in range(n)],
        "event_timestamp": INTERVAL_START + pd.to_timedelta(np.arange(n) - 900, unit="min"),
        "query_norm": queries, "device": "mobile", "hour": 9, "strategy": chosen,
        "propensity": 1.0 / len(STRATEGIES), "reward": reward, "policy_version": "uniform",
    })
    d = train_and_gate("bandit", store["ctx"], tracking_uri=store["uri"], reports_dir=store["reports"], frame=frame)
    assert d.promoted and d.metric == "dr_lower" and d.metrics["snips_ratio"] > 1.5
    version, policy = load_champion(store["uri"], "bandit")
    pmf = policy.pmf(bandit_context("iphone 13 case", "mobile", 9, {}), STRATEGIES)
    assert version == d.version and STRATEGIES[int(np.argmax(pmf))] == "lexical"
