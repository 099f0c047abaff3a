"""The scorer serves the bandit's retrieval plans: the union of the chosen strategies at their budgets, and the
decision log carries every strategy, every budget and the probability of the whole plan."""

from __future__ import annotations

import numpy as np
import pytest

from ml.events.store import read_events, write_events
from ml.events.validate import validate_frame
from ml.families.bandit import Action, marginal_shares, single
from ml.settings import Settings
from serving.event_log import EventLog
from serving.schemas import RankRequest
from serving.scorer import Scorer
from tests.serving.test_serving_app import T0, _catalog

PAIR = Action(("lexical", "semantic"), (0.5, 0.5))


class PlanBandit:
    """A plan policy: the lexical+semantic pair with probability 0.8, memory alone 0.2."""

    actions = (PAIR, single("memory"))

    def action_pmf(self, shared, strategy_feats=None):
        return np.array([0.8, 0.2])

    def pmf(self, shared, strategies, action_feats=None):   # the per-strategy view every bandit model offers
        return marginal_shares(self.actions, self.action_pmf(shared), strategies)


@pytest.fixture()
def scorer(tmp_path):
    settings = Settings(home=tmp_path / "home", page_size=5, candidate_budget=20, position_explore_rate=0.0)
    write_events(settings.raw_dir, "catalog", _catalog(), batch_id="seed")
    s = Scorer(settings, feast_repo=tmp_path / "none", clock=lambda: T0,
               champion_loader=lambda f: ("3", PlanBandit()) if f == "bandit" else None,
               event_log=EventLog(settings.raw_dir, flush_every=10_000))
    s.load()
    return s, settings


def test_scorer_retrieves_and_logs_the_chosen_plan(scorer):
    s, settings = scorer
    responses = [s.rank(RankRequest(query="red leather shoes", user_id="u", request_id=f"r{i}", k=5))
                 for i in range(40)]
    s.events.flush()
    dec = read_events(settings.raw_dir, "decisions")
    assert validate_frame("decisions", dec).n_bad == 0
    by_plan = dec["strategies"].map(tuple).value_counts()
    assert set(by_plan.index) == {("lexical", "semantic"), ("memory",)} and by_plan[("lexical", "semantic")] >= 25
    pair = dec[dec["strategies"].map(len) == 2]
    assert all(list(b) == [10, 10] for b in pair["budgets"]) and np.allclose(pair["propensity"], 0.8)
    mem = dec[dec["strategies"].map(len) == 1]
    assert all(list(b) == [20] for b in mem["budgets"]) and np.allclose(mem["propensity"], 0.2)
    # a pair's page mixes both strategies' candidates (interleaved by budget share, retrieval order: no ranker)
    imp = read_events(settings.raw_dir, "impressions")
    pair_pages = imp[imp["request_id"].isin(pair["request_id"])]
    assert {"lexical", "semantic"} <= set(pair_pages["strategy"])
    assert set(pair_pages["strategy"]) <= {"lexical", "semantic", "popularity"}
    primary = {r.request_id: r.strategy for r in responses}
    assert all(primary[rid] == st[0] for rid, st in zip(dec["request_id"], dec["strategies"]))


class RecordingBandit(PlanBandit):
    """PlanBandit that keeps the shared context it was asked about."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def action_pmf(self, shared, strategy_feats=None):
        self.seen.append(shared)
        return super().action_pmf(shared, strategy_feats)


def test_scorer_logs_every_strategys_probe_and_the_policy_sees_it(tmp_path):
    from ml.events.schema import STRATEGIES
    from ml.families.bandit import probe_features

    settings = Settings(home=tmp_path / "home", page_size=5, candidate_budget=20, position_explore_rate=0.0)
    write_events(settings.raw_dir, "catalog", _catalog(), batch_id="seed")
    bandit = RecordingBandit()
    s = Scorer(settings, feast_repo=tmp_path / "none", clock=lambda: T0,
               champion_loader=lambda f: ("3", bandit) if f == "bandit" else None,
               event_log=EventLog(settings.raw_dir, flush_every=10_000))
    s.load()
    s.rank(RankRequest(query="red leather shoes", user_id="u", request_id="p1", k=5))
    s.events.flush()
    dec = read_events(settings.raw_dir, "decisions")
    assert validate_frame("decisions", dec).n_bad == 0
    counts, scores = list(dec["probe_counts"].iloc[0]), list(dec["probe_scores"].iloc[0])
    # the logged probe is what each strategy retrieves for the query at the full budget
    strategies = s._state.retrieval.strategies
    ctx = {"request_id": "p1", "device": "desktop", "hour": T0.hour, "user_id": "u"}
    for name, c, t in zip(STRATEGIES, counts, scores):
        found = strategies[name].retrieve("red leather shoes", ctx, 20)
        assert c == len(found)
        assert (t is None or np.isnan(t)) if not found else t == pytest.approx(found[0].score)
    # the structured parser recognized constraints in "red leather shoes"; the policy saw the same features
    assert counts[STRATEGIES.index("structured")] > 0
    expected = probe_features((counts, scores))
    assert expected["n_attr"] >= 1
    assert {k: bandit.seen[0][k] for k in expected} == pytest.approx(expected)
