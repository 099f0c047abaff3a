"""Bandit family: a contextual bandit over retrieval strategies (Vowpal Wabbit ``--cb_explore_adf``).

Each logged decision is (context, chosen strategy, its logging probability, reward). VW learns a cost-sensitive
policy over action-dependent features (ADF: one ``|Strategy`` line per strategy) with query x strategy
interactions, and explores epsilon-greedily; ``pmf`` is what the scorer samples from (and logs the propensity of).
"""

from __future__ import annotations

import atexit
import json
import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.events.schema import STRATEGIES
from ml.families.base import GateSpec, NotEnoughData, TrainContext, bootstrap_se, time_split
from ml.features import QUERY_FEATURES, STRATEGY_FEATURES
from ml.text import tokenize

# VW workspaces finish themselves in __del__, which fails (a traceback on stderr) when it runs during interpreter
# shutdown after pyvw's module globals are gone. Finish the live ones at exit, while everything still exists.
_LIVE_WORKSPACES: weakref.WeakSet[Any] = weakref.WeakSet()


def _workspace(*args: Any, **kwargs: Any) -> Any:
    import vowpalwabbit

    ws = vowpalwabbit.Workspace(*args, **kwargs)
    _LIVE_WORKSPACES.add(ws)
    return ws


@atexit.register
def _finish_workspaces() -> None:
    for ws in list(_LIVE_WORKSPACES):
        ws.finish()

# VW minimises cost; our logs carry a reward (higher is better). cost = COST_SIGN * reward. Getting this sign wrong
# trains a policy that seeks the worst strategy, and nothing crashes.
COST_SIGN: float = -1.0

MODEL_FILE = "policy.vw"
META_FILE = "meta.json"

_HOUR_BUCKETS = ((0, "night"), (6, "morning"), (12, "afternoon"), (18, "evening"))


def reward_to_cost(reward: float) -> float:
    """VW cost of a logged reward (see COST_SIGN)."""
    return COST_SIGN * float(reward)


def _vw_name(value: Any) -> str:
    """A token safe in VW text (no spaces, ``|`` or ``:``)."""
    return str(value).replace(" ", "_").replace("|", "_").replace(":", "_")


def _vw_features(feats: dict[str, Any]) -> str:
    """``name:value`` for numbers, ``name=value`` (an indicator) for strings, ``name`` for True; skip None/False/NaN/0."""
    parts = []
    for name, value in feats.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(_vw_name(name))
        elif isinstance(value, (int, float, np.integer, np.floating)):
            v = float(value)
            if math.isnan(v) or v == 0.0:
                continue
            parts.append(f"{_vw_name(name)}:{v:.6g}")
        else:
            parts.append(f"{_vw_name(name)}={_vw_name(value)}")
    return " ".join(parts)


def to_vw_example(shared: dict[str, Any], actions: list[dict[str, Any]],
                  label: tuple[int, float, float] | None) -> str:
    """One multiline ADF example: ``shared |Query ...`` then one ``|Strategy ...`` line per action.

    ``label`` = (chosen_index, cost, probability): written as ``chosen_index:cost:probability`` in front of the
    chosen action's line (VW's ADF parser keys the label by the line it sits on; the leading index is informative).
    """
    lines = [f"shared |Query {_vw_features(shared)}".rstrip()]
    for i, action in enumerate(actions):
        prefix = ""
        if label is not None and i == label[0]:
            prefix = f"{label[0]}:{label[1]:.6g}:{label[2]:.6g} "
        lines.append(f"{prefix}|Strategy {_vw_features(action)}".rstrip())
    return "\n".join(lines)


def hour_bucket(hour: int) -> str:
    bucket = _HOUR_BUCKETS[0][1]
    for start, name in _HOUR_BUCKETS:
        if int(hour) >= start:
            bucket = name
    return bucket


def bandit_context(query: str, device: str, hour: int, query_feats: dict[str, Any]) -> dict[str, Any]:
    """The shared (context) features of one request: THE one function used by training and serving.

    Query understanding from the text (token count, digits: model numbers/sizes favour lexical matching), when
    and where (hour bucket, device), and the query's history from Feast (``QUERY_FEATURES``: per-strategy
    smoothed reward rates, volume, CTR); missing history (new query) reads as 0 plus a ``q_new`` flag.
    """
    tokens = tokenize(query)
    n_req = query_feats.get("q_n_requests")
    n_req = 0.0 if n_req is None or (isinstance(n_req, float) and math.isnan(n_req)) else float(n_req)
    ctx: dict[str, Any] = {
        "n_tokens": float(len(tokens)),
        "single_token": len(tokens) == 1,
        "has_digit": any(ch.isdigit() for ch in query),
        "device": str(device or "unknown"),
        "hour": hour_bucket(int(hour)),
        "q_new": n_req <= 0,
        "q_log_requests": math.log1p(max(n_req, 0.0)),
    }
    for name in QUERY_FEATURES:
        if name in ("q_n_requests", "q_len_tokens"):
            continue          # volume enters as log; length is recomputed from the text above
        v = query_feats.get(name)
        ctx[name] = 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return ctx


def strategy_action(strategy: str, feats: dict[str, Any] | None) -> dict[str, Any]:
    """Action features of one strategy: its id (interacts with every query feature via ``-q QS``) and its stats."""
    feats = feats or {}
    n = feats.get("s_n_decisions")
    n = 0.0 if n is None or (isinstance(n, float) and math.isnan(n)) else float(n)
    rate = feats.get("s_reward_rate")
    rate = 0.0 if rate is None or (isinstance(rate, float) and math.isnan(rate)) else float(rate)
    return {"id": strategy, "s_reward_rate": rate, "s_log_decisions": math.log1p(max(n, 0.0))}


@dataclass
class BanditPolicy:
    """The native model: a VW workspace (not picklable: save/load go through VW's model file)."""

    workspace: Any
    strategies: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def pmf(self, shared: dict[str, Any], strategies: Sequence[str],
            action_feats: dict[str, dict[str, Any]] | None = None) -> np.ndarray:
        """Probabilities over ``strategies`` (in that order, sums to 1), exploration included."""
        action_feats = action_feats or {}
        actions = [strategy_action(s, action_feats.get(s)) for s in strategies]
        p = np.asarray(self.workspace.predict(to_vw_example(shared, actions, None)), dtype=np.float64)
        return p / p.sum()


def _strategy_col(feat: str, strategy: str) -> str:
    return f"{feat}__{strategy}"


def _decisions(frame: pd.DataFrame, strategies: Sequence[str]) -> Iterator[tuple[dict, dict, int, float, float]]:
    """(shared, action_feats, chosen_index, reward, propensity) per logged decision, in the frame's order."""
    cols = {s: {f: _strategy_col(f, s) for f in STRATEGY_FEATURES} for s in strategies}
    qcols = [c for c in QUERY_FEATURES if c in frame.columns]
    index = {s: i for i, s in enumerate(strategies)}
    for row in frame.to_dict("records"):
        chosen = index.get(row["strategy"])
        if chosen is None:
            continue
        shared = bandit_context(row["query_norm"], row.get("device", ""), int(row.get("hour", 0)),
                                {c: row[c] for c in qcols})
        action_feats = {s: {f: row.get(c) for f, c in cols[s].items()} for s in strategies}
        yield shared, action_feats, chosen, float(row["reward"]), float(row["propensity"])


class BanditFamily:
    """VW contextual bandit over ``STRATEGIES``."""

    name = "bandit"
    registered_model = "ltrr-bandit"
    # Gate: SNIPS estimate of the policy's expected reward on the holdout (max). With rewards >= 0 an absolute
    # floor of 0 only catches a broken estimate, so the honest floor is relative to what is serving now (below).
    # min_delta is small because SNIPS is noisy; a lower-confidence-bound promotion rule is a later issue.
    gate_spec = GateSpec(metric="snips_value", direction="max", floor=0.0, min_delta=0.005)
    # Not significantly worse than the policy that logged the holdout: (SNIPS + 2 bootstrap SE) / logged >= 1.
    # A fixed ratio would be decided by noise on a small holdout (45 decisions on day one).
    extra_floors: ClassVar[dict[str, float]] = {"snips_upper_ratio": 1.0}
    default_params: ClassVar[dict[str, Any]] = {
        "epsilon": 0.1,          # exploration kept by the served policy (propensities stay >= eps/K)
        # Doubly robust: unbiased with the logged propensities like IPS, but the learned reward model absorbs
        # most of the variance that 1/propensity adds when the logging policy rarely tried a strategy.
        "cb_type": "dr",
        "learning_rate": 0.5,
        "power_t": 0.5,
        "passes": 1,
        "bits": 18,
        "seed": 0,
        "min_train_decisions": 50,
        "min_holdout_decisions": 20,
    }

    # ---- data ----
    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Decisions (``label_bandit``) + point-in-time Feast features of service ``bandit_v1``.

        ``bandit_v1`` joins query stats by ``query_norm`` and strategy stats by ``strategy``; the policy needs the
        stats of EVERY strategy at decision time, not only the chosen one. So the entity frame is expanded to one
        row per (decision, strategy) and Feast does every point-in-time join (one PIT implementation, the one the
        online store mirrors); strategy stats are then pivoted to ``s_<feat>__<strategy>`` columns.
        """
        decisions = pd.read_parquet(Path(ctx.marts_dir) / "label_bandit.parquet")
        if decisions.empty:
            raise NotEnoughData("label_bandit is empty")
        if ctx.feast_repo is None:
            return decisions
        from ml.feature_store import historical_features  # Feast is heavy; only the training path needs it

        n = len(decisions)
        expanded = pd.DataFrame({
            "request_id": np.repeat(decisions["request_id"].to_numpy(), len(STRATEGIES)),
            "event_timestamp": np.repeat(decisions["event_timestamp"].to_numpy(), len(STRATEGIES)),
            "query_norm": np.repeat(decisions["query_norm"].to_numpy(), len(STRATEGIES)),
            "strategy": np.tile(np.asarray(STRATEGIES, dtype=object), n),
        })
        feats = historical_features(ctx.feast_repo, ctx.feast_env, expanded, "bandit_v1")
        out = decisions.reset_index(drop=True).copy()
        first = feats.iloc[:: len(STRATEGIES)].reset_index(drop=True)   # row order is preserved by contract
        for name in QUERY_FEATURES:
            out[name] = first[name].to_numpy() if name in first else np.nan
        for j, s in enumerate(STRATEGIES):
            rows = feats.iloc[j:: len(STRATEGIES)].reset_index(drop=True)
            for f in STRATEGY_FEATURES:
                out[_strategy_col(f, s)] = rows[f].to_numpy() if f in rows else np.nan
        return out

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        return time_split(frame, ctx, group_col="request_id")

    # ---- model ----
    def _vw_args(self, p: dict[str, Any]) -> str:
        return (f"--cb_explore_adf --epsilon {float(p['epsilon'])} --cb_type {p['cb_type']} -q QS "
                f"-l {float(p['learning_rate'])} --power_t {float(p['power_t'])} -b {int(p['bits'])} "
                f"--random_seed {int(p['seed'])} --quiet")

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> BanditPolicy:

        p = {**self.default_params, **params}
        df = frame.loc[frame["strategy"].isin(STRATEGIES)]
        if len(df) < int(p["min_train_decisions"]):
            raise NotEnoughData(f"bandit: {len(df)} training decisions (< {p['min_train_decisions']})")
        # Learn in time order: the policy is an online learner and later decisions should weigh as they came.
        df = df.sort_values("event_timestamp", kind="mergesort")
        strategies = list(STRATEGIES)
        ws = _workspace(self._vw_args(p))
        examples = [
            to_vw_example(shared, [strategy_action(s, af.get(s)) for s in strategies],
                          (chosen, reward_to_cost(reward), prop))
            for shared, af, chosen, reward, prop in _decisions(df, strategies)
        ]
        for _ in range(int(p["passes"])):
            for ex in examples:
                ws.learn(ex)
        meta = {"strategies": strategies, "vw_args": self._vw_args(p), "n_train": len(examples),
                "params": {k: p[k] for k in ("epsilon", "cb_type", "learning_rate", "power_t", "passes", "bits")}}
        return BanditPolicy(workspace=ws, strategies=strategies, meta=meta)

    def evaluate(self, model: Any, holdout: pd.DataFrame) -> dict[str, float]:
        """Off-policy value of ``model`` (anything with ``pmf``) on logged decisions.

        w = pi(a_logged | x) / propensity;  IPS = mean(r * w);  SNIPS = sum(r * w) / sum(w).
        """
        min_n = int(self.default_params["min_holdout_decisions"])
        rows = list(_decisions(holdout, list(STRATEGIES)))
        if len(rows) < min_n:
            raise NotEnoughData(f"bandit: {len(rows)} holdout decisions (< {min_n})")
        r = np.empty(len(rows))
        w = np.empty(len(rows))
        wg = np.empty(len(rows))
        for i, (shared, af, chosen, reward, prop) in enumerate(rows):
            pmf = model.pmf(shared, STRATEGIES, af)
            r[i] = reward
            w[i] = pmf[chosen] / prop
            wg[i] = float(int(np.argmax(pmf)) == chosen) / prop
        logged = float(r.mean())
        if logged <= 0:
            raise NotEnoughData("bandit: no reward in the holdout; the policy cannot be judged")
        snips = float((r * w).sum() / w.sum()) if w.sum() > 0 else 0.0
        snips_se = bootstrap_se(np.column_stack([r, w]),
                                lambda a: float((a[:, 0] * a[:, 1]).sum() / max(a[:, 1].sum(), 1e-12)))
        return {
            "snips_se": snips_se,
            "snips_upper_ratio": (snips + 2 * snips_se) / logged,
            "snips_value": snips,
            "ips_value": float((r * w).mean()),
            "logged_value": logged,
            "snips_ratio": snips / logged,
            "greedy_snips_value": float((r * wg).sum() / wg.sum()) if wg.sum() > 0 else 0.0,
            "ess": float(w.sum() ** 2 / (w ** 2).sum()) if (w ** 2).sum() > 0 else 0.0,
            "n_holdout": float(len(rows)),
        }

    # ---- persistence ----
    def save(self, model: BanditPolicy, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.workspace.save(str(path / MODEL_FILE))
        (path / META_FILE).write_text(json.dumps({**model.meta, "strategies": model.strategies}, indent=2))

    def load(self, path: Path) -> BanditPolicy:

        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        # The model file carries its reduction stack (cb_explore_adf, epsilon, -q QS); only the file is needed.
        ws = _workspace(arg_list=["-i", str(path / MODEL_FILE), "--quiet"])
        return BanditPolicy(workspace=ws, strategies=list(meta["strategies"]), meta=meta)

    def pyfunc_predict(self, model: BanditPolicy, model_input: pd.DataFrame) -> pd.DataFrame:
        """What the MLflow pyfunc returns: the pmf over ``STRATEGIES`` per row of (query, device, hour, q_*...)."""
        rows = []
        for row in model_input.to_dict("records"):
            shared = bandit_context(str(row.get("query", row.get("query_norm", ""))), row.get("device", ""),
                                    int(row.get("hour", 0)), {c: row.get(c) for c in QUERY_FEATURES})
            af = {s: {f: row.get(_strategy_col(f, s)) for f in STRATEGY_FEATURES} for s in model.strategies}
            rows.append(model.pmf(shared, model.strategies, af))
        return pd.DataFrame(rows, columns=model.strategies)


FAMILY = BanditFamily()
