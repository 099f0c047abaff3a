"""End to end through the real components: two simulated days served by the scorer and closed by the real
DAG (`dag.test()`), then a corrupted batch that must stop at validation and leave the champions alone."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from ml.settings import FAMILIES, Settings
from serving.scorer import UNIFORM_POLICY

pytestmark = pytest.mark.integration

START = date(2026, 1, 1)


@pytest.fixture(scope="module")
def flywheel(session_home):
    from ltrr.demo import run_demo

    settings = Settings(home=session_home / "e2e")
    rows = run_demo(settings, days=2, requests_per_day=300, n_items=400, seed=11, start=START)
    return settings, rows


def test_two_days_promote_every_family(flywheel):
    from ml.registry import champion_versions

    settings, rows = flywheel
    assert [r.dag_state for r in rows] == ["success", "success"]
    champions = champion_versions(settings.tracking_uri, settings.model_prefix)
    # The bandit's first version must beat the cold-start policy with evidence (its DR lower bound above the logged
    # value); two days of 300 requests are rarely enough, so the bandit may still be serving uniformly. Every other
    # family is promoted on these two days.
    assert all(champions[f] for f in FAMILIES if f != "bandit"), champions
    # every decision, promotion or refusal, is recorded with its numbers
    decisions = list((settings.reports_dir / "decisions").glob("*.json"))
    assert len(decisions) >= len(FAMILIES)
    bandit = [json.loads(p.read_text()) for p in decisions if p.name.startswith("bandit-")]
    assert len(bandit) == 2 and all({"dr_lower", "dr_value", "n_holdout"} <= set(d["metrics"]) for d in bandit)
    assert bool(champions["bandit"]) == any(d["promoted"] for d in bandit)
    # the attributes champion backfilled missing catalog attributes, with provenance
    filled = pd.read_parquet(settings.marts_dir / "item_attributes.parquet")
    assert {"item_id", "attribute", "value", "confidence", "source", "model_version"} <= set(filled.columns)
    assert (filled["source"] == "extracted").any()
    assert set(filled.loc[filled["source"] == "extracted", "model_version"]) == {champions["attributes"]}
    # the demo's report: the daily table and its plots
    report = settings.reports_dir / "demo"
    assert "NDCG@10" in (report / "index.html").read_text()
    assert all((report / f"{name}.png").stat().st_size > 5000 for name in ("quality", "strategies", "champions"))


def test_scorer_serves_the_champions(flywheel):
    from fastapi.testclient import TestClient

    from ml.registry import champion_versions
    from serving.app import create_app

    settings, _ = flywheel
    champions = champion_versions(settings.tracking_uri, settings.model_prefix)
    with TestClient(create_app(settings, settings.feast_repo)) as client:
        models = client.get("/models").json()
        served = {f: models["champions"][f] for f in FAMILIES}
        assert served == champions
        resp = client.post("/rank", json={"query": "red leather bags", "user_id": "u-test", "device": "mobile"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["items"] and 0 < body["propensity"] <= 1
        assert body["policy_version"] == (champions["bandit"] or UNIFORM_POLICY)
        bad = client.post("/rank", json={"query": "", "user_id": "u-test", "device": "mobile"})
        assert bad.status_code == 422


def test_rerunning_a_day_is_idempotent(flywheel):
    from ltrr.airflow_env import run_day
    from ml.dbt_runner import MARTS

    settings, _ = flywheel
    before = {m: pd.read_parquet(settings.marts_dir / f"{m}.parquet") for m in MARTS}
    raw_files = sorted(p.relative_to(settings.raw_dir) for p in settings.raw_dir.rglob("*.parquet"))
    result = run_day(settings, START + timedelta(days=1))
    assert result["state"] == "success"
    for m in MARTS:
        pd.testing.assert_frame_equal(pd.read_parquet(settings.marts_dir / f"{m}.parquet"), before[m], obj=m)
    assert sorted(p.relative_to(settings.raw_dir) for p in settings.raw_dir.rglob("*.parquet")) == raw_files


def test_corrupted_batch_fails_at_validation_and_keeps_champions(flywheel):
    from ltrr.airflow_env import run_day
    from ltrr.demo import _Clock, serve_day
    from ml.events.store import read_events, write_events
    from ml.registry import champion_versions
    from ml.sim import SimConfig, Simulator
    from serving.scorer import Scorer

    settings, _ = flywheel
    before = champion_versions(settings.tracking_uri, settings.model_prefix)
    day = START + timedelta(days=2)
    sim = Simulator(SimConfig(seed=11, n_items=400, requests_per_day=100, start=START))
    clock = _Clock()
    scorer = Scorer(settings, feast_repo=settings.feast_repo, clock=clock, rng_seed=1)
    scorer.load()
    serve_day(scorer, sim, day, clock)
    decisions = read_events(settings.raw_dir, "decisions", day, day)
    corrupt = decisions.head(5).assign(event_id=lambda f: f["event_id"] + "-bad", propensity=1.7)
    write_events(settings.raw_dir, "decisions", corrupt, batch_id="corrupt")

    result = run_day(settings, day)
    assert result["state"] == "failed"
    assert result["tasks"]["validate_raw"] == "failed"
    assert all(state != "success" for task, state in result["tasks"].items() if task.startswith("train"))
    assert champion_versions(settings.tracking_uri, settings.model_prefix) == before
    reports = sorted((settings.reports_dir / "validation").glob("raw-*"))
    assert reports and any("propensity" in p.read_text() for p in reports)
    # nothing was lost: the raw partition still holds every event, the corrupt rows included
    assert len(read_events(settings.raw_dir, "decisions", day, day)) == len(decisions) + 5
