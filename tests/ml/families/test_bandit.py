"""Bandit family: VW text format, the context function, known-answer policies over strategies and over plans
(subsets + budgets), off-policy evaluation and the LCB promotion rule, persistence."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import pandas as pd
import pytest

from ml.events.schema import STRATEGIES
from ml.families.bandit import (
    ACTION_SETS,
    COST_SIGN,
    FAMILY,
    UNION_ACTION,
    Action,
    bandit_context,
    hour_bucket,
    marginal_shares,
    plan_cost,
    priced,
    reward_to_cost,
    to_vw_example,
)
from ml.families.base import NotEnoughData, TrainContext, time_split
from ml.registry import gate

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


def test_cost_is_negative_reward_plus_the_plans_retrieval_cost():
    assert COST_SIGN == -1.0 and reward_to_cost(3.0) == -3.0 and reward_to_cost(0.0) == 0.0
    assert reward_to_cost(3.0, 0.1) == pytest.approx(-2.9)
    assert np.allclose(reward_to_cost(np.array([1.0, 0.0]), np.array([0.05, 0.3])), [-0.95, 0.3])
    union, lexical = priced([UNION_ACTION, Action(("lexical",), (1.0,))], 0.05)
    assert union.cost == pytest.approx(0.3) and lexical.cost == pytest.approx(0.05)
    assert union == UNION_ACTION                                   # the price is not part of the plan's identity


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
    """Feast is faked: the family must ask for the query view on every decision, then the strategy view on every
    decision keyed by each strategy in turn, and pivot strategy stats wide (the real join: tests/ml/test_feature_store.py)."""
    import sys
    import types
    from datetime import datetime

    from ml.families.base import TrainContext

    logs = _logs(3, seed=5)
    logs.to_parquet(tmp_path / "label_bandit.parquet")
    calls = []

    def historical_features(repo_path, env, entity_df, service, views=None):
        calls.append((service, env, tuple(views), len(entity_df), sorted(entity_df.columns)))
        out = entity_df.copy()
        if views == ("query_stats_fv",):
            out["q_n_requests"] = [float(i) for i in range(len(out))]
        else:
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
    assert calls[0] == ("bandit_v1", {"X": "1"}, ("query_stats_fv",), 3, ["event_timestamp", "query_norm"])
    assert calls[1:] == [("bandit_v1", {"X": "1"}, ("strategy_stats_fv",), 3, ["event_timestamp", "strategy"])
                         ] * len(STRATEGIES)
    assert len(frame) == 3 and frame["strategy"].tolist() == logs["strategy"].tolist()   # chosen strategy kept
    assert frame["q_n_requests"].tolist() == [0.0, 1.0, 2.0]
    assert frame["s_reward_rate__semantic"].tolist() == [0.2] * 3
    assert frame["s_n_decisions__exploration"].tolist() == [5.0] * 3


# ---- retrieval plans (subsets of strategies with budgets) -------------------------------------------------
PLANS = ACTION_SETS["pairs_all"]
BEST_PLAN = {DIGIT_QUERY: "lexical+semantic", TEXT_QUERY: "memory"}


def _plan_logs(n: int, seed: int) -> pd.DataFrame:
    """Uniform logging over every plan; the best plan per context is a PAIR for digit queries (reward 0.9) and a
    single for text queries; every other plan earns 0.2."""
    rng = np.random.default_rng(seed)
    queries = np.where(rng.random(n) < 0.5, DIGIT_QUERY, TEXT_QUERY)
    picks = rng.integers(0, len(PLANS), n)
    plans = [PLANS[i] for i in picks]
    p_reward = np.where([p.key == BEST_PLAN[q] for q, p in zip(queries, plans)], 0.9, 0.2)
    logged = [p.logged(50) for p in plans]
    return pd.DataFrame({
        "request_id": [f"p{seed}-r{i}" for i in range(n)],
        "event_timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "query_norm": queries, "device": "mobile", "hour": 10,
        "strategy": [s[0] for s, _ in logged], "strategies": [s for s, _ in logged],
        "budgets": [b for _, b in logged], "propensity": 1.0 / len(PLANS),
        "reward": (rng.random(n) < p_reward).astype(float), "policy_version": "uniform",
    })


def _true_value(policy, queries) -> float:
    """Exact expected reward of ``policy`` on these queries in the world of ``_plan_logs``."""
    keys = [a.key for a in policy.actions]
    cost = [plan_cost(a.strategies, FAMILY.default_params["strategy_cost"]) for a in policy.actions]
    total = 0.0
    for q in queries:
        pmf = policy.action_pmf(bandit_context(q, "mobile", 10, {}), {})
        total += sum(p * ((0.9 if k == BEST_PLAN[q] else 0.2) - c) for p, k, c in zip(pmf, keys, cost))
    return total / len(queries)


@pytest.fixture(scope="module")
def plan_policy():
    return FAMILY.train(_plan_logs(6000, seed=11), FAMILY.default_params)


@pytest.mark.parametrize(("action", "total", "budgets", "logged"), [
    (Action(("lexical",), (1.0,)), 50, [50], (["lexical"], [50])),
    (Action(("lexical", "semantic"), (0.5, 0.5)), 51, [26, 25], (["lexical", "semantic"], [26, 25])),
    (Action(("memory", "lexical"), (0.25, 0.75)), 40, [10, 30], (["lexical", "memory"], [30, 10])),
    (UNION_ACTION, 50, [9, 9, 8, 8, 8, 8], (list(STRATEGIES), [9, 9, 8, 8, 8, 8])),
])
def test_plan_budgets_sum_to_the_total_and_log_the_primary_first(action, total, budgets, logged):
    assert action.budgets(total) == budgets and sum(budgets) == total
    assert action.logged(total) == logged


def test_action_sets_hold_singles_pairs_and_the_union():
    assert [len(ACTION_SETS[k]) for k in ("single", "pairs", "pairs_all")] == [6, 21, 22]
    assert len({a.key for a in PLANS}) == len(PLANS) and PLANS[-1] == UNION_ACTION


def test_policy_learns_the_best_plan_per_context_including_a_pair(plan_policy):
    keys = [a.key for a in plan_policy.actions]
    for query, best in BEST_PLAN.items():
        pmf = plan_policy.action_pmf(bandit_context(query, "mobile", 10, {}), {})
        assert pmf.sum() == pytest.approx(1.0) and pmf.min() > 0
        assert keys[int(np.argmax(pmf))] == best
    shares = plan_policy.pmf(bandit_context(DIGIT_QUERY, "mobile", 10, {}), STRATEGIES)
    assert shares.sum() == pytest.approx(1.0)
    assert set(np.array(STRATEGIES)[np.argsort(-shares)[:2]]) == {"lexical", "semantic"}


def test_retrieval_cost_makes_the_policy_commit_to_the_smallest_plan_among_equals():
    """Every plan holding memory earns the same for TEXT_QUERY (the interleaving puts memory's find first): without a
    cost the choice among them is arbitrary, with one the policy serves memory alone."""
    rng = np.random.default_rng(5)
    logs = _plan_logs(6000, seed=14)
    holds_memory = logs["strategies"].map(lambda s: "memory" in s)
    logs["reward"] = (rng.random(len(logs)) < np.where(holds_memory, 0.8, 0.2)).astype(float)
    logs["query_norm"] = TEXT_QUERY
    policy = FAMILY.train(logs, {**FAMILY.default_params, "strategy_cost": 0.1})
    pmf = policy.action_pmf(bandit_context(TEXT_QUERY, "mobile", 10, {}), {})
    assert policy.actions[int(np.argmax(pmf))].key == "memory"
    shares = marginal_shares(policy.actions, pmf)
    assert shares[STRATEGIES.index("memory")] > 0.6


def test_primary_action_sets_lean_on_one_strategy():
    primary = ACTION_SETS["primary_all"]
    assert len(ACTION_SETS["primary"]) == 6 + 30 and primary[-1] == UNION_ACTION
    lex_sem = next(a for a in primary if a.strategies == ("lexical", "semantic"))
    assert lex_sem.primary == "lexical" and lex_sem.budgets(50) == [38, 12]


def test_marginal_shares_split_a_pair_half_half():
    pmf = np.zeros(len(PLANS))
    pmf[[a.key for a in PLANS].index("lexical+semantic")] = 1.0
    shares = marginal_shares(PLANS, pmf)
    assert shares[STRATEGIES.index("lexical")] == pytest.approx(0.5)
    assert shares[STRATEGIES.index("semantic")] == pytest.approx(0.5)


def test_evaluate_plan_policy_matches_its_exact_value(plan_policy):
    holdout = _plan_logs(4000, seed=12)
    m = FAMILY.evaluate(plan_policy, holdout)
    truth = _true_value(plan_policy, holdout["query_norm"])
    assert abs(m["dr_value"] - truth) / truth < 0.1, (m["dr_value"], truth)
    assert m["dr_lower"] <= truth <= m["dr_upper"]
    assert m["dr_lower"] < m["dr_value"] < m["dr_upper"]
    assert m["logged_engagement"] == pytest.approx(holdout["reward"].mean())
    n_strategies = holdout["strategies"].map(len)
    assert m["logged_value"] == pytest.approx((holdout["reward"] - m["strategy_cost"] * n_strategies).mean())


def test_gate_promotes_only_when_the_lower_bound_beats_the_champions_estimate(plan_policy):
    holdout = _plan_logs(1500, seed=13)
    spec = FAMILY.gate_spec
    assert (spec.metric, spec.champion_metric) == ("dr_lower", "dr_value")
    strong = FAMILY.evaluate(plan_policy, holdout)
    weak = FAMILY.evaluate(_Uniform(), holdout)
    # the learned policy against the uniform champion: promoted
    assert gate(spec, strong, weak[spec.champion_metric], FAMILY.extra_floors)[0]
    # the same policy against itself: its lower bound does not beat its own estimate
    assert not gate(spec, strong, strong[spec.champion_metric], FAMILY.extra_floors)[0]
    # uniform against the learned champion: refused
    assert not gate(spec, weak, strong[spec.champion_metric], FAMILY.extra_floors)[0]


class _UniformPlans:
    """The cold-start policy: uniform over every plan."""

    actions = tuple(PLANS)

    def action_pmf(self, shared, strategy_feats=None):
        return np.full(len(self.actions), 1.0 / len(self.actions))


def test_first_version_must_beat_the_cold_start_policy_with_evidence(plan_policy):
    """No champion: the incumbent is the uniform cold start, valued on its own logs at their mean; the first version
    is promoted only when its DR lower bound beats that (the rule a challenger meets against a champion)."""
    spec = FAMILY.gate_spec
    holdout = _plan_logs(1500, seed=14)
    strong = FAMILY.evaluate(plan_policy, holdout)
    assert strong["dr_lower"] > strong["logged_value"]
    assert gate(spec, strong, None, FAMILY.extra_floors)[0]
    # the cold start itself does not beat itself
    assert not gate(spec, FAMILY.evaluate(_UniformPlans(), holdout), None, FAMILY.extra_floors)[0]
    # "not significantly worse" is not enough: an interval around the logged value keeps the cold start serving
    unsure = {**strong, "dr_lower": 0.5 * strong["logged_value"], "dr_lower_ratio": 0.5, "dr_upper_ratio": 1.5}
    passed, reason = gate(spec, unsure, None, FAMILY.extra_floors)
    assert not passed and "dr_lower_ratio" in reason


def _days_of_logs(n_days: int, per_day: int) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    days = pd.date_range("2024-01-01", periods=n_days, freq="D", tz="UTC")
    frame = pd.concat([_plan_logs(per_day, seed=20 + i).assign(event_timestamp=d + pd.to_timedelta(
        np.arange(per_day), unit="min")) for i, d in enumerate(days)], ignore_index=True)
    return frame, days


def _night(day: pd.Timestamp) -> TrainContext:
    return TrainContext(interval_start=day.to_pydatetime(), interval_end=(day + pd.Timedelta(days=1)).to_pydatetime(),
                        marts_dir=".")


def test_split_holds_out_a_fixed_share_of_the_last_days_requests():
    frame, days = _days_of_logs(5, 400)
    p = FAMILY.default_params
    train, hold = FAMILY.split(frame, _night(days[-1]))
    window = frame[frame["event_timestamp"] >= days[-p["holdout_days"]]]
    assert set(hold["request_id"]) <= set(window["request_id"])
    assert abs(len(hold) / len(window) - p["holdout_share"]) < 0.05
    assert len(train) + len(hold) == len(frame) and not set(train["request_id"]) & set(hold["request_id"])
    # the hash is fixed: what an earlier night trained on (the champion) holds none of tonight's holdout
    for k in range(1, len(days)):
        earlier_train, _ = FAMILY.split(frame[frame["event_timestamp"] < days[-k]], _night(days[-k - 1]))
        assert not set(earlier_train["request_id"]) & set(hold["request_id"])
    # the first night (one day of data) holds out the same share of it
    first = frame[frame["event_timestamp"] < days[1]]
    _, first_hold = FAMILY.split(first, _night(days[0]))
    assert abs(len(first_hold) / len(first) - p["holdout_share"]) < 0.05
    # other families' default is unchanged: the interval being closed
    _, closed = time_split(frame, _night(days[-1]), group_col="request_id")
    assert set(closed["request_id"]) == set(frame.loc[frame["event_timestamp"] >= days[-1], "request_id"])


def test_save_load_round_trip_keeps_the_plans(plan_policy, tmp_path):
    FAMILY.save(plan_policy, tmp_path / "plans")
    loaded = FAMILY.load(tmp_path / "plans")
    assert [a.key for a in loaded.actions] == [a.key for a in plan_policy.actions]
    shared = bandit_context(DIGIT_QUERY, "mobile", 10, {})
    np.testing.assert_allclose(loaded.action_pmf(shared, {}), plan_policy.action_pmf(shared, {}), rtol=1e-6)
    out = FAMILY.pyfunc_predict(loaded, pd.DataFrame({"query": [DIGIT_QUERY], "device": ["mobile"], "hour": [10]}))
    assert list(out.columns) == [a.key for a in plan_policy.actions]
    assert out.iloc[0].sum() == pytest.approx(1.0)


def test_logged_budgets_rounded_to_whole_candidates_still_match_their_plan():
    """The union of six at 50 candidates is logged as 9/9/8/8/8/8, a pair at 51 as 26/25: both are their plans."""
    logs = _plan_logs(300, seed=21)
    union_rows = logs["strategies"].map(len) == len(STRATEGIES)
    assert union_rows.any() and all(tuple(b) == (9, 9, 8, 8, 8, 8) for b in logs.loc[union_rows, "budgets"])
    logs.loc[logs["strategies"].map(len) == 2, "budgets"] = pd.Series(
        [[26, 25]] * int((logs["strategies"].map(len) == 2).sum()),
        index=logs.index[logs["strategies"].map(len) == 2])
    model = FAMILY.train(logs, {**FAMILY.default_params, "min_train_decisions": 10})
    assert model.meta["n_skipped"] == 0 and model.meta["n_train"] == len(logs)


# ---- request-time probes: features recomputed from the logged decision row ---------------------------------
def test_probe_features_from_logged_counts_and_scores():
    from ml.families.bandit import probe_features

    counts = [40, 50, 50, 0, 50, 50]                       # STRATEGIES order; memory found nothing
    scores = [12.0, 2.07, 0.8, None, 30.0, 3.9]            # structured: 2 constraints + popularity prior
    f = probe_features((counts, scores))
    assert f["n_lexical"] == pytest.approx(np.log1p(40)) and f["top_lexical"] == pytest.approx(np.log1p(12.0))
    assert f["n_memory"] == 0.0 and f["top_memory"] == 0.0 and f["mem_known"] is False
    assert f["n_attr"] == 2.0
    assert probe_features(None) == {"probes_missing": True}
    # the same features whether the frame carries the lists or the serving call passes them
    ctx = bandit_context("red leather shoes", "mobile", 10, {}, (counts, scores))
    assert {k: ctx[k] for k in f} == f


def _probe_world(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Uniform logging over the singles; every query is a new random word (its text says nothing), and what each
    strategy pays depends only on what the strategies found: lexical's success probability rises with BM25's
    top score, structured pays when the parser recognized attribute constraints, semantic is a flat 0.45, the
    rest 0.1. Returns the logs and the exact expected reward of every single strategy per row."""
    rng = np.random.default_rng(seed)
    top_lex = rng.uniform(0, 20, n)
    n_attr = rng.integers(0, 3, n)
    value = np.full((n, len(STRATEGIES)), 0.1)
    value[:, STRATEGIES.index("lexical")] = 0.05 + 0.9 * top_lex / 20
    value[:, STRATEGIES.index("structured")] = np.where(n_attr >= 1, 0.75, 0.05)
    value[:, STRATEGIES.index("semantic")] = 0.45
    pick = rng.integers(0, len(STRATEGIES), n)
    counts = [[50, 50 if a else 0, 50, 0, 50, 50] for a in n_attr]
    scores = [[t, (a + 0.05) if a else None, 0.6, None, 20.0, 3.0] for t, a in zip(top_lex, n_attr)]
    logs = pd.DataFrame({
        "request_id": [f"q{seed}-r{i}" for i in range(n)],
        "event_timestamp": pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC"),
        "query_norm": [f"zz{seed}x{i}" for i in range(n)], "device": "mobile", "hour": 10,
        "strategy": np.asarray(STRATEGIES)[pick], "propensity": 1.0 / len(STRATEGIES),
        "reward": (rng.random(n) < value[np.arange(n), pick]).astype(float),
        "probe_counts": counts, "probe_scores": scores,
    })
    return logs, value


def test_policy_learns_from_probes_on_queries_it_never_saw():
    """The query text carries nothing, so any gain over the best context-free strategy comes from the probes."""
    from ml.families.bandit import logged_decisions

    logs, _ = _probe_world(6000, seed=3)
    model = FAMILY.train(logs, {**FAMILY.default_params, "action_set": "single"})
    test, value = _probe_world(400, seed=4)
    lg = logged_decisions(test)
    col = {a.key: STRATEGIES.index(a.key) for a in model.actions}
    greedy = np.array([col[model.actions[int(np.argmax(model.action_pmf(s, f)))].key]
                       for s, f in zip(lg.shared, lg.strategy_feats)])
    learned = value[np.arange(len(test)), greedy].mean()
    oracle = value.max(axis=1).mean()
    best_static = value.mean(axis=0).max()
    assert learned > best_static + 0.5 * (oracle - best_static)
    assert learned > 0.85 * oracle


def test_streamed_training_learns_the_same_policy_as_the_file_path():
    logs, _ = _probe_world(1500, seed=5)
    a = FAMILY.train(logs, {**FAMILY.default_params, "stream_min_decisions": 10**9})
    b = FAMILY.train(logs, {**FAMILY.default_params, "stream_min_decisions": 1})
    assert a.meta["n_train"] == b.meta["n_train"] == 1500
    from ml.families.bandit import logged_decisions

    lg = logged_decisions(logs.head(50))
    for s, f in zip(lg.shared, lg.strategy_feats):
        np.testing.assert_allclose(a.action_pmf(s, f), b.action_pmf(s, f))


def test_vw_features_text_is_the_same_on_the_memoised_path_and_the_general_one(monkeypatch):
    """Python floats / bools / strings take the memoised fast path, numpy scalars and ints the general one: the same
    text either way, and the same when the memos are cold, warm or cleared because full."""
    from ml.families import bandit

    feats = {"a b": 1.5, "c:d": "x|y z", "flag": True, "off": False, "none": None, "nan": float("nan"),
             "zero": 0.0, "neg_zero": -0.0, "big": 123456789.0, "tiny": 1e-7, "inf": float("inf"), "three": 3.0}
    expected = "a_b:1.5 c_d=x_y_z flag big:1.23457e+08 tiny:1e-07 inf:inf three:3"
    general = {**feats, "a b": np.float64(1.5), "nan": np.float32("nan"), "zero": np.int64(0), "big": np.float64(
        123456789.0), "tiny": np.float64(1e-7), "inf": np.float64("inf"), "three": 3}
    monkeypatch.setattr(bandit, "_MEMO_MAX", 3)            # the memos fill up and are cleared along the way
    for _ in range(3):
        assert bandit._vw_features(feats) == expected
        assert bandit._vw_features(general) == expected
        for cost in (0.0, -0.0, -2.0, 1 / 3):               # labels: the same memo, zero's sign kept
            assert to_vw_example({}, [{}, {}], (1, cost, 0.25)) == f"shared |Query\n|Strategy\n1:{cost:.6g}:0.25 |Strategy"


def test_training_only_vw_args_leave_the_saved_model_byte_identical(tmp_path):
    """``TRAIN_ONLY_VW_ARGS`` (--no_predict) only skips work: ``FAMILY.train`` saves the very model file VW writes
    when it learns the same training text with the model's own arguments alone (SquareCB, the default)."""
    from ml.families.bandit import MODEL_FILE, TRAIN_ONLY_VW_ARGS, _training_text, _workspace

    assert "--no_predict" in TRAIN_ONLY_VW_ARGS
    logs, _ = _probe_world(800, seed=6)
    p = FAMILY.default_params
    FAMILY.save(FAMILY.train(logs, p), tmp_path / "with")
    data = tmp_path / "train.vw"
    with data.open("w") as fh:
        _training_text(logs.sort_values("event_timestamp", kind="mergesort"), priced(
            ACTION_SETS[p["action_set"]], p["strategy_cost"]), fh)
    ws = _workspace(f"{FAMILY._vw_args(p)} -d {data}")
    ws.save(str(tmp_path / "without.vw"))
    assert (tmp_path / "with" / MODEL_FILE).read_bytes() == (tmp_path / "without.vw").read_bytes()


def test_cold_start_is_uniform_over_every_plan():
    from ml.families.bandit import cold_start_pmf

    pmf = cold_start_pmf(ACTION_SETS["pairs_all"])
    assert pmf.shape == (22,) and np.allclose(pmf, 1 / 22)


def test_logged_decisions_share_equal_contexts_and_give_the_per_row_answers(trained):
    """logged_decisions shares one dict between rows with the same context (memory); every row must still read
    exactly its own bandit_context and strategy stats, and policy_matrix / context_matrix (which work once per
    distinct dict) must equal their row-by-row answers."""
    from ml.families.bandit import _canonical, _strategy_col, context_matrix, logged_decisions, policy_matrix

    logs = _logs(300, seed=11)
    rng = np.random.default_rng(0)
    logs["q_ctr"] = rng.choice([np.nan, 0.1, 0.2], len(logs))
    for s in STRATEGIES:
        logs[_strategy_col("s_reward_rate", s)] = rng.choice([np.nan, 0.3], len(logs))
    lg = logged_decisions(logs)
    assert len({id(s) for s in lg.shared}) < len(logs) / 3        # shared, not one dict per row
    for i, row in enumerate(logs.itertuples(index=False)):
        assert lg.shared[i] == bandit_context(row.query_norm, row.device, row.hour, {"q_ctr": row.q_ctr})
        rate = getattr(row, _strategy_col("s_reward_rate", "lexical"))
        got = lg.strategy_feats[i]["lexical"]["s_reward_rate"]
        assert got == rate or (np.isnan(got) and np.isnan(rate))
    target, _, plans = policy_matrix(trained, lg)
    per_row = np.vstack([trained.action_pmf(s, f) for s, f in zip(lg.shared, lg.strategy_feats)])
    cols = [plans.index(_canonical(a.strategies, a.shares)) for a in trained.actions]
    np.testing.assert_allclose(target[:, cols], per_row / per_row.sum(axis=1, keepdims=True))
    copies = [dict(s) for s in lg.shared]                           # distinct dicts: no sharing to exploit
    np.testing.assert_array_equal(context_matrix(lg.shared), context_matrix(copies))


def test_clip_p_one_makes_training_ignore_the_logged_propensities():
    """``clip_p`` = 1.0 (the default): every logged decision weighs 1 in VW's regression, so logs that differ only
    in their propensities learn the very same policy; without clipping (0) a rare draw weighs 1/p and they differ."""
    from ml.families.bandit import logged_decisions

    logs, _ = _probe_world(600, seed=11)
    rare = logs.assign(propensity=np.where(np.arange(len(logs)) % 3 == 0, 0.01, logs["propensity"]))
    lg = logged_decisions(logs.head(40))

    def pmfs(frame: pd.DataFrame, clip: float) -> np.ndarray:
        model = FAMILY.train(frame, {**FAMILY.default_params, "action_set": "single", "clip_p": clip})
        assert ("--clip_p" in model.meta["vw_args"]) == (clip > 0)
        return np.vstack([model.action_pmf(s, f) for s, f in zip(lg.shared, lg.strategy_feats)])

    assert FAMILY.default_params["clip_p"] == 1.0
    np.testing.assert_allclose(pmfs(logs, 1.0), pmfs(rare, 1.0))
    assert not np.allclose(pmfs(logs, 0.0), pmfs(rare, 0.0))
