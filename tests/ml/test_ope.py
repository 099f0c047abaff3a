"""Off-policy estimators on a synthetic logged bandit whose target-policy value is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ml import ope

K = 4


def _world(n: int, seed: int):
    """Contexts x ~ U(0,1)^2; E[r | x, a] = mean_reward(x)[a]; rewards Bernoulli; logging policy softmax-ish."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    mean = np.column_stack([0.2 + 0.6 * x[:, 0], 0.8 - 0.6 * x[:, 0], 0.3 + 0.4 * x[:, 1], np.full(n, 0.25)])
    logits = np.column_stack([x[:, 0], x[:, 1], 1 - x[:, 0], np.full(n, 0.5)]) * 2.0
    mu = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    u = rng.random(n)
    chosen = (u[:, None] > np.cumsum(mu, axis=1)).sum(axis=1)
    chosen = np.minimum(chosen, K - 1)
    rows = np.arange(n)
    reward = (rng.random(n) < mean[rows, chosen]).astype(float)
    return x, mean, mu, chosen, reward


def _target(x: np.ndarray) -> np.ndarray:
    """A deterministic-ish target: mostly the best of actions 0/1 by x0, 10% uniform."""
    n = len(x)
    greedy = np.where(x[:, 0] > 0.5, 0, 1)
    pi = np.full((n, K), 0.1 / K)
    pi[np.arange(n), greedy] += 0.9
    return pi


@pytest.fixture(scope="module")
def logged():
    x, mean, mu, chosen, reward = _world(20_000, seed=3)
    pi = _target(x)
    truth = float((pi * mean).sum(axis=1).mean())   # exact value of the target policy on these contexts
    q = ope.fit_reward_model(x, chosen, reward, K)
    return x, mu, chosen, reward, pi, q, truth


@pytest.mark.parametrize("name", ope.ESTIMATORS)
def test_each_estimator_recovers_the_known_value(logged, name):
    _x, mu, chosen, reward, pi, q, truth = logged
    prop = mu[np.arange(len(chosen)), chosen]
    est = ope.estimate(reward, prop, chosen, pi, q, n_boot=200, seed=1)[name]
    assert abs(est.value - truth) / truth < 0.05, (name, est, truth)
    assert est.lower <= truth <= est.upper                 # the 95% interval covers the truth here
    assert est.lower < est.value < est.upper and est.se > 0


def test_logging_policy_value_equals_the_logged_mean(logged):
    _x, mu, chosen, reward, _pi, q, _truth = logged
    prop = mu[np.arange(len(chosen)), chosen]
    est = ope.estimate(reward, prop, chosen, mu, q, n_boot=50)
    assert est["ips"].value == pytest.approx(reward.mean())
    assert est["snips"].value == pytest.approx(reward.mean())


def test_dr_has_smaller_interval_than_ips(logged):
    _x, mu, chosen, reward, pi, q, _truth = logged
    prop = mu[np.arange(len(chosen)), chosen]
    est = ope.estimate(reward, prop, chosen, pi, q, n_boot=200)
    assert est["dr"].se < est["ips"].se


def test_reward_model_with_shared_action_features_matches_per_action_means():
    rng = np.random.default_rng(0)
    n = 6000
    x = rng.random((n, 1))
    chosen = rng.integers(0, 3, n)
    mean = np.array([0.1, 0.5, 0.3])[chosen] + 0.2 * x[:, 0]
    reward = mean + rng.normal(0, 0.05, n)
    q = ope.fit_reward_model(x, chosen, reward, 3)
    np.testing.assert_allclose(q[:, 1] - q[:, 0], 0.4, atol=0.02)
    # composite features: action 2 = half of 0 + half of 1 (a linear world the features can express)
    F = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    q2 = ope.fit_reward_model(x, chosen, reward, 3, F)
    assert q2.shape == (n, 3)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r, p, a, t: (r, np.where(np.arange(len(p)) == 3, 0.0, p), a, t), "propensities outside"),
    (lambda r, p, a, t: (r, np.where(np.arange(len(p)) == 3, 1.5, p), a, t), "propensities outside"),
    (lambda r, p, a, t: (r, p, a, t * 2), "do not sum to 1"),
    (lambda r, p, a, t: (r, p, np.where(np.arange(len(a)) == 0, K, a), t), "chosen action index"),
    (lambda r, p, a, t: (r[:-1], p, a, t), "length mismatch"),
])
def test_bad_inputs_raise_readable_errors(mutate, message):
    x, _mean, mu, chosen, reward = _world(50, seed=1)
    prop = mu[np.arange(50), chosen]
    r, p, a, t = mutate(reward, prop, chosen, _target(x))
    with pytest.raises(ValueError, match=message):
        ope.estimate(r, p, a, t, np.zeros_like(t))


def test_dr_needs_a_reward_model():
    x, _mean, mu, chosen, reward = _world(50, seed=1)
    with pytest.raises(ValueError, match="reward_hat"):
        ope.estimate(reward, mu[np.arange(50), chosen], chosen, _target(x), None)


def _interaction_world(n: int, seed: int):
    """E[r | x, a] with an interaction a linear-in-x model per action cannot express (a threshold on x0 x x1)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    both = ((x[:, 0] > 0.5) & (x[:, 1] > 0.5)).astype(float)
    mean = np.column_stack([0.5 + 2.0 * both, 1.5 - 1.0 * both, np.full(n, 1.0)])
    chosen = rng.integers(0, 3, n)                                   # uniform logging, propensity 1/3
    reward = mean[np.arange(n), chosen] + rng.normal(0, 0.3, n)
    return x, mean, chosen, reward


def test_boosted_reward_model_fits_interactions_and_shrinks_dr_noise():
    x, mean, chosen, reward = _interaction_world(6000, seed=4)
    n = len(chosen)
    q_gbm = ope.fit_reward_model_gbm(x, chosen, reward, 3, seed=0)
    q_ridge = ope.fit_reward_model(x, chosen, reward, 3)
    assert q_gbm.shape == (n, 3)
    rmse = lambda q: float(np.sqrt(((q - mean) ** 2).mean()))
    assert rmse(q_gbm) < 0.5 * rmse(q_ridge), (rmse(q_gbm), rmse(q_ridge))
    pi = np.eye(3)[np.zeros(n, dtype=int)]                           # deterministic target: always action 0
    truth = float(mean[:, 0].mean())
    prop = np.full(n, 1 / 3)
    est = ope.estimate(reward, prop, chosen, pi, q_gbm, n_boot=200, seed=1)
    est_ridge = ope.estimate(reward, prop, chosen, pi, q_ridge, n_boot=200, seed=1)
    assert abs(est["dr"].value - truth) / truth < 0.05
    assert est["dr"].lower <= truth <= est["dr"].upper
    assert est["dr"].se < est_ridge["dr"].se                        # a better q: a tighter DR


def test_reward_model_fitted_by_blocks_of_rows_equals_one_block(monkeypatch):
    """fit_reward_model accumulates the ridge's normal equations over blocks of rows (bounded memory); the answer
    must not depend on the block size."""
    rng = np.random.default_rng(3)
    n, k = 3000, 5
    X = rng.normal(size=(n, 4))
    chosen = rng.integers(0, k, n)
    rewards = X[:, 0] * (chosen == 1) + rng.normal(scale=0.1, size=n)
    whole = ope.fit_reward_model(X, chosen, rewards, k, folds=2, seed=0)
    monkeypatch.setattr(ope, "_DESIGN_CELLS", 7 * 30)          # 7 rows per block (d*m = 5*6 = 30 cells a row)
    blocks = ope.fit_reward_model(X, chosen, rewards, k, folds=2, seed=0)
    np.testing.assert_allclose(blocks, whole, rtol=1e-9, atol=1e-12)
    assert np.corrcoef(whole[chosen == 1, 1], X[chosen == 1, 0])[0, 1] > 0.9    # and it learned the reward
