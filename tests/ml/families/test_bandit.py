"""Bandit family: VW text format, the context function, a known-answer policy, off-policy evaluation, persistence."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import pandas as pd
import pytest

from ml.events.schema import STRATEGIES
from ml.families.bandit import COST_SIGN, FAMILY, bandit_context, hour_bucket, reward_to_cost, to_vw_example
from ml.families.base import NotEnoughData

DIGIT_QUERY, TEXT_QUERY = "iphone 13 case", "cozy summer dress"
BEST = {DIGIT_QUERY: "lexical", TEXT_QUERY: "semantic"}


def _logs(n: int, seed: int) -> pd.DataFrame:
    """Uniform logging over STRATEGIES; the best strategy depends on the context (a digit in the query):
    P(reward=1) = 0.8 for the best strategy, 0.2 otherwise."""
    rng = np.random.default_rng(seed)
    queries = np.where(rng.random(n) < 0.5, DIGIT_QUERY, TEXT_QUERY)
    chosen = [STRATEGIES[i] for i in rng.integers(0, len(STRATEGIES), n)]
    p_reward = np.where([c == BEST[q] for q, c in zip(queries, chosen)], 0.8, 0.2)
    return pd.DataFrame({
        "request_id": [f"s{seed}-r{i}" for i in range(n)],
        "event_timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "query_norm": queries, "device": rng.choice(["desktop", "mobile", "app"], n),
        "hour": rng.integers(0, 24, n), "strategy": chosen, "propensity": 1.0 / len(STRATEGIES),
        "reward": (rng.random(n) < p_reward).astype(float), "policy_version": "uniform",
    })


class _Uniform:
    def pmf(self, shared, strategies, action_feats=None):
        return np.full(len(strategies), 1.0 / len(strategies))


@pytest.fixture(scope="module")
def trained():
    return FAMILY.train(_logs(2500, seed=1), FAMILY.default_params)


@pytest.mark.parametrize(("label", "expected"), [
    (None, ("shared |Query n_tokens:2 has_digit device=mobile q_rate_lexical:0.25\n"
            "|Strategy id=lexical s_reward_rate:0.1\n|Strategy id=semantic")),
    ((1, -2.0, 0.2), ("shared |Query n_tokens:2 has_digit device=mobile q_rate_lexical:0.25\n"
                      "|Strategy id=lexical s_reward_rate:0.1\n1:-2:0.2 |Strategy id=semantic")),
])
def test_to_vw_example_exact_text(label, expected):
    shared = {"n_tokens": 2.0, "has_digit": True, "single_token": False, "device": "mobile",
              "q_rate_lexical": 0.25, "q_rate_memory": 0.0}
    actions = [{"id": "lexical", "s_reward_rate": 0.1}, {"id": "semantic", "s_reward_rate": float("nan")}]
    assert to_vw_example(shared, actions, label) == expected


def test_cost_is_negative_reward():
    assert COST_SIGN == -1.0 and reward_to_cost(3.0) == -3.0 and reward_to_cost(0.0) == 0.0


@pytest.mark.parametrize(("hour", "bucket"), [(0, "night"), (5, "night"), (6, "morning"), (13, "afternoon"),
                                              (23, "evening")])
def test_hour_bucket(hour, bucket):
    assert hour_bucket(hour) == bucket


def test_bandit_context_reads_text_and_history_and_tolerates_missing_features():
    ctx = bandit_context("iPhone 13 Cases!", "app", 20, {"q_n_requests": 9.0, "q_rate_memory": np.nan})
    assert ctx["n_tokens"] == 3 and ctx["has_digit"] is True and ctx["device"] == "app" and ctx["hour"] == "evening"
    assert ctx["q_new"] is False and ctx["q_log_requests"] == pytest.approx(np.log(10.0))
    assert ctx["q_rate_memory"] == 0.0 and ctx["q_rate_lexical"] == 0.0
    assert bandit_context("dress", "mobile", 1, {})["q_new"] is True


def test_policy_prefers_the_right_strategy_per_context(trained):
    for query, best in BEST.items():
        pmf = trained.pmf(bandit_context(query, "mobile", 12, {}), STRATEGIES)
        assert pmf.sum() == pytest.approx(1.0)
        assert STRATEGIES[int(np.argmax(pmf))] == best
        assert pmf.min() > 0          # exploration keeps every strategy loggable


def test_learned_policy_beats_the_uniform_logging_policy_off_policy(trained):
    holdout = _logs(600, seed=2)
    learned = FAMILY.evaluate(trained, holdout)
    uniform = FAMILY.evaluate(_Uniform(), holdout)
    assert uniform["snips_value"] == pytest.approx(uniform["logged_value"])    # w == 1 everywhere
    # Known answer: the best policy with epsilon 0.1 earns about 0.8 * 0.92 + 0.2 * 0.08 = 0.75; uniform 0.3.
    assert learned["snips_value"] > uniform["snips_value"] + 0.3
    assert learned["snips_ratio"] > 2.0 and learned["ips_value"] > 0.5
    assert learned["greedy_snips_value"] >= learned["snips_value"] - 0.05


def test_save_load_round_trip_gives_the_same_pmf(trained, tmp_path):
    FAMILY.save(trained, tmp_path / "policy")
    loaded = FAMILY.load(tmp_path / "policy")
    feats = {s: {"s_reward_rate": 0.1 * i, "s_n_decisions": 10 * i} for i, s in enumerate(STRATEGIES)}
    for query in BEST:
        shared = bandit_context(query, "desktop", 8, {"q_n_requests": 3, "q_rate_lexical": 0.4})
        np.testing.assert_allclose(loaded.pmf(shared, STRATEGIES, feats), trained.pmf(shared, STRATEGIES, feats),
                                   rtol=1e-6)
    assert loaded.strategies == list(STRATEGIES)


def test_too_few_decisions_is_not_enough_data():
    with pytest.raises(NotEnoughData):
        FAMILY.train(_logs(10, seed=3), FAMILY.default_params)


def test_training_set_joins_every_strategys_stats_point_in_time(tmp_path, monkeypatch):
    """Feast is faked: the family must ask for one row per (decision, strategy) and pivot strategy stats wide."""
    import sys
    import types
    from datetime import datetime

    from ml.families.base import TrainContext

    logs = _logs(3, seed=5)
    logs.to_parquet(tmp_path / "label_bandit.parquet")
    seen = {}

    def historical_features(repo_path, env, entity_df, service):
        seen.update(service=service, env=env, n=len(entity_df))
        out = entity_df.copy()
        out["q_n_requests"] = [float(i // len(STRATEGIES)) for i in range(len(out))]
        out["s_reward_rate"] = [STRATEGIES.index(s) / 10 for s in out["strategy"]]
        out["s_n_decisions"] = 5.0
        return out

    fake = types.ModuleType("ml.feature_store")
    fake.historical_features = historical_features
    monkeypatch.setitem(sys.modules, "ml.feature_store", fake)
    ctx = TrainContext(interval_start=datetime(2024, 1, 1, tzinfo=UTC),
                       interval_end=datetime(2024, 1, 2, tzinfo=UTC), marts_dir=tmp_path,
                       feast_repo=tmp_path, feast_env={"X": "1"})
    frame = FAMILY.training_set(ctx)
    assert seen == {"service": "bandit_v1", "env": {"X": "1"}, "n": 3 * len(STRATEGIES)}
    assert len(frame) == 3 and frame["strategy"].tolist() == logs["strategy"].tolist()   # chosen strategy kept
    assert frame["q_n_requests"].tolist() == [0.0, 1.0, 2.0]
    assert frame["s_reward_rate__semantic"].tolist() == [0.2] * 3
    assert frame["s_n_decisions__exploration"].tolist() == [5.0] * 3
