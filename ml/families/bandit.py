"""Bandit family: a contextual bandit over retrieval plans (Vowpal Wabbit ``--cb_explore_adf``).

An action is a *retrieval plan*: a subset of strategies and the share of the candidate budget each one gets
(``Action``): every strategy alone at the full budget, every pair at half/half, all six at a sixth each
(``ACTION_SETS``; docs/bandit.md says how this formulation was chosen by measurement). Each logged decision is
(context, chosen plan, the probability the serving policy gave that whole plan, reward). VW learns a
cost-sensitive policy over action-dependent features (ADF: one ``|Strategy`` line per plan, carrying the plan's
id and its strategies' budget shares, so a pair shares statistical strength with its two singles) with
query x plan interactions, and explores with SquareCB; ``action_pmf`` is what the scorer samples from and
logs the propensity of. Off-policy evaluation and the promotion rule live in ``ml/ope.py`` and ``gate_spec``.
"""

from __future__ import annotations

import atexit
import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml import ope
from ml.events.schema import STRATEGIES
from ml.families.base import GateSpec, NotEnoughData, TrainContext, read_mart, time_split
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
WORD_PREFIX = "w_"          # context keys holding the query's words (left out of OPE's dense reward model)
MAX_QUERY_WORDS = 8


def reward_to_cost(reward: Any, plan_cost: Any = 0.0) -> Any:
    """VW cost of a logged reward (see COST_SIGN) plus the chosen plan's retrieval cost (``Action.cost``, in reward
    units): the objective the policy minimises. Floats or numpy arrays (elementwise)."""
    if isinstance(reward, np.ndarray) or isinstance(plan_cost, np.ndarray):
        return COST_SIGN * np.asarray(reward, dtype=np.float64) + np.asarray(plan_cost, dtype=np.float64)
    return COST_SIGN * float(reward) + float(plan_cost)


def _vw_name(value: Any) -> str:
    """A token safe in VW text (no spaces, ``|`` or ``:``)."""
    return str(value).replace(" ", "_").replace("|", "_").replace(":", "_")


# Memos of the text of string keys and (key, string value) pairs (``_token``) and of float values (``_number``):
# the same few dozen feature names, categories (device, hour, words) and many values (log counts, a query's
# stats) recur in every example: re-sanitising names and re-formatting numbers was over a third of the time
# ``_training_text`` took to format a million decisions (serving's per-request line gains too). Bounded: each
# is cleared when full.
_TOKENS: dict[Any, str] = {}
_NUMBERS: dict[float, str] = {}
_MEMO_MAX = 1 << 17


def _token(key: Any) -> str:
    """``_vw_name(key)`` (a str key) or ``name=value`` (a (str, str) key), memoised in ``_TOKENS``."""
    tok = _TOKENS.get(key)
    if tok is None:
        tok = _vw_name(key) if type(key) is str else f"{_vw_name(key[0])}={_vw_name(key[1])}"
        if len(_TOKENS) >= _MEMO_MAX:
            _TOKENS.clear()
        _TOKENS[key] = tok
    return tok


def _number(value: float) -> str:
    """``f"{value:.6g}"`` of a Python float, memoised in ``_NUMBERS`` (zeros are not: 0.0 and -0.0 are equal keys
    with different texts)."""
    text = _NUMBERS.get(value)
    if text is None:
        text = f"{value:.6g}"
        if value:
            if len(_NUMBERS) >= _MEMO_MAX:
                _NUMBERS.clear()
            _NUMBERS[value] = text
    return text


def _vw_features(feats: dict[str, Any]) -> str:
    """``name:value`` for numbers, ``name=value`` (an indicator) for strings, ``name`` for True; skip None/False/NaN/0.

    Python floats, bools and strings under str names (most of what ``bandit_context`` / ``action_features``
    produce) take the memoised fast path; anything else (ints, numpy scalars, ...) the general one: same text."""
    parts = []
    append = parts.append
    tokens, numbers, isnan = _TOKENS, _NUMBERS, math.isnan   # the memo lookups inline: this loop is hot
    for name, value in feats.items():
        t = type(value)
        if t is float and type(name) is str:
            if value != 0.0 and not isnan(value):
                append(f"{tokens.get(name) or _token(name)}:{numbers.get(value) or _number(value)}")
        elif t is bool and type(name) is str:
            if value:
                append(tokens.get(name) or _token(name))
        elif t is str and type(name) is str:
            key = (name, value)
            append(tokens.get(key) or _token(key))
        elif value is None or value is False:
            continue
        elif value is True:
            append(_vw_name(name))
        elif isinstance(value, (int, float, np.integer, np.floating)):
            v = float(value)
            if math.isnan(v) or v == 0.0:
                continue
            append(f"{_vw_name(name)}:{v:.6g}")
        else:
            append(f"{_vw_name(name)}={_vw_name(value)}")
    return " ".join(parts)


def _shared_line(shared: dict[str, Any]) -> str:
    return f"shared |Query {_vw_features(shared)}".rstrip()


def _action_line(action: dict[str, Any]) -> str:
    return f"|Strategy {_vw_features(action)}".rstrip()


def _join_example(shared_line: str, action_lines: Sequence[str], label: tuple[int, float, float] | None) -> str:
    if label is None:
        return "\n".join((shared_line, *action_lines))
    return _labelled_example(shared_line, _split_at(action_lines, label[0]), label)


def _split_at(action_lines: Sequence[str], chosen: int) -> tuple[str, str]:
    """The action lines as two texts around where the label goes: every line before the chosen one (each ending in
    a newline), then the chosen line and the rest. ``_training_text`` reuses them across rows."""
    return "".join(f"{line}\n" for line in action_lines[:chosen]), "\n".join(action_lines[chosen:])


def _labelled_example(shared_line: str, split: tuple[str, str], label: tuple[int, float, float]) -> str:
    return f"{shared_line}\n{split[0]}{label[0]}:{_number(float(label[1]))}:{_number(float(label[2]))} {split[1]}"


def to_vw_example(shared: dict[str, Any], actions: list[dict[str, Any]],
                  label: tuple[int, float, float] | None) -> str:
    """One multiline ADF example: ``shared |Query ...`` then one ``|Strategy ...`` line per action.

    ``label`` = (chosen_index, cost, probability): written as ``chosen_index:cost:probability`` in front of the
    chosen action's line (VW's ADF parser keys the label by the line it sits on; the leading index is informative).
    THE one formatter: serving's ``action_pmf`` and the training file (``_training_text``, which caches the same
    line strings per distinct context) both go through ``_shared_line`` / ``_action_line`` / ``_join_example``.
    """
    return _join_example(_shared_line(shared), [_action_line(a) for a in actions], label)


def hour_bucket(hour: int) -> str:
    bucket = _HOUR_BUCKETS[0][1]
    for start, name in _HOUR_BUCKETS:
        if int(hour) >= start:
            bucket = name
    return bucket


PROBE_COLUMNS: tuple[str, str] = ("probe_counts", "probe_scores")   # decision-log columns (ml/events/schema.py)


def _signed_log1p(v: float) -> float:
    return math.copysign(math.log1p(abs(v)), v)


def probe_features(probes: tuple[Sequence[Any], Sequence[Any]] | None) -> dict[str, Any]:
    """Request-time features of what every strategy found for this query (``ml.retrieval.strategy_probes``).

    ``probes`` = (candidate count, top retrieval score) per strategy in ``STRATEGIES`` order, as the decision log
    stores them; None (a decision logged before probes existed) reads as ``probes_missing``. Per strategy:
    ``n_<s>`` = log1p(count) and ``top_<s>`` = signed log1p(top score) (BM25, constraints matched, cosine, q2e
    confidence, popularity); query understanding on top: ``n_attr`` (attribute constraints the structured parser
    recognized: its score is that count plus a popularity prior below 1) and ``mem_known`` (the q2e memory
    knows the query). Crossed with every plan by ``-q QS``, ``top_lexical x in_lexical`` is the plan's
    share-weighted BM25 evidence: a signal that transfers to queries never seen before.
    """
    if probes is None:
        return {"probes_missing": True}
    counts, scores = probes
    out: dict[str, Any] = {}
    for s, c, t in zip(STRATEGIES, counts, scores):
        c = 0.0 if c is None or (isinstance(c, float) and math.isnan(c)) else float(c)
        t = 0.0 if t is None or (isinstance(t, float) and math.isnan(t)) or c <= 0 else float(t)
        out[f"n_{s}"] = math.log1p(max(c, 0.0))
        out[f"top_{s}"] = _signed_log1p(t)
    structured = STRATEGIES.index("structured")
    memory = STRATEGIES.index("memory")
    c_st, t_st = counts[structured], scores[structured]
    has_st = c_st is not None and not (isinstance(c_st, float) and math.isnan(c_st)) and c_st > 0
    out["n_attr"] = float(math.floor(float(t_st))) if has_st and t_st is not None else 0.0
    c_mem = counts[memory]
    out["mem_known"] = bool(c_mem is not None and not (isinstance(c_mem, float) and math.isnan(c_mem)) and c_mem > 0)
    return out


def bandit_context(query: str, device: str, hour: int, query_feats: dict[str, Any],
                   probes: tuple[Sequence[Any], Sequence[Any]] | None = None) -> dict[str, Any]:
    """The shared (context) features of one request: THE one function used by training and serving.

    Query understanding from the text (token count, digits: model numbers/sizes favour lexical matching), when
    and where (hour bucket, device), and the query's history from Feast (``QUERY_FEATURES``: per-strategy
    smoothed reward rates, volume, CTR); missing history (new query) reads as 0 plus a ``q_new`` flag; what each
    strategy retrieved for it at request time (``probe_features``).
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
    # The query's words (bag of words, hashed by VW, crossed with every plan by -q QS): which words call for which
    # strategy ("shoes" or a color for structured, "gifts for" for semantic, a brand for lexical) is learned from
    # the logs, and repeated head queries are remembered by their words. Length as a category too: the query
    # kinds differ in length, and not monotonically.
    ctx["len"] = str(min(len(tokens), MAX_QUERY_WORDS))
    for tok in tokens[:MAX_QUERY_WORDS]:
        ctx[f"{WORD_PREFIX}{tok}"] = True
    ctx.update(probe_features(probes))
    return ctx


# --------------------------------------------------------------------------------------------------------------
# Actions: retrieval plans (a subset of strategies and their budget shares)


@dataclass(frozen=True)
class Action:
    """A retrieval plan: draw ``share`` of the candidate budget from each of ``strategies`` (shares sum to 1)."""

    strategies: tuple[str, ...]
    shares: tuple[float, ...]
    # Training cost of serving this plan, in reward units (``priced``; 0 in ``ACTION_SETS``). Not part of the plan's
    # identity: a priced plan equals the unpriced one.
    cost: float = field(default=0.0, compare=False)

    @property
    def key(self) -> str:
        """``lexical``, ``lexical+semantic`` (equal shares) or ``lexical:0.75+semantic:0.25``."""
        if len(set(self.shares)) <= 1:
            return "+".join(self.strategies)
        return "+".join(f"{s}:{w:.2f}" for s, w in zip(self.strategies, self.shares))

    @property
    def primary(self) -> str:
        """The strategy with the largest share (the first on ties): the ``strategies[0]`` of the decision log."""
        return self.strategies[int(np.argmax(self.shares))]

    def budgets(self, total: int) -> list[int]:
        """Candidates per strategy for a total budget (largest-remainder rounding, each at least 1)."""
        raw = np.asarray(self.shares) * total
        out = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - out), kind="stable")[: int(total - out.sum())]:
            out[i] += 1
        return [max(1, int(b)) for b in out]

    def logged(self, total: int) -> tuple[list[str], list[int]]:
        """(strategies, budgets) as the decision log stores them: the primary first, then action order."""
        budgets = self.budgets(total)
        order = sorted(range(len(self.strategies)), key=lambda i: (-self.shares[i], i))
        return [self.strategies[i] for i in order], [budgets[i] for i in order]


def _canonical(strategies: Sequence[str], weights: Sequence[float]) -> tuple[tuple[str, float], ...]:
    """Order-free identity of a plan: (strategy, share rounded to 2 decimals) in ``STRATEGIES`` order."""
    total = float(sum(weights))
    pairs = {str(s): round(float(w) / total, 2) for s, w in zip(strategies, weights)} if total > 0 else {}
    order = {s: i for i, s in enumerate(STRATEGIES)}
    return tuple(sorted(pairs.items(), key=lambda kv: order.get(kv[0], len(order))))


def single(strategy: str) -> Action:
    return Action((strategy,), (1.0,))


PRIMARY_SHARE = 0.75        # the primary strategy's share in the ``primary`` action sets' pairs


def _build_action_sets() -> dict[str, tuple[Action, ...]]:
    singles = tuple(single(s) for s in STRATEGIES)
    pairs = tuple(Action((a, b), (0.5, 0.5)) for i, a in enumerate(STRATEGIES) for b in STRATEGIES[i + 1:])
    # every ordered pair as primary + secondary: the plan says which of its two strategies it leans on
    primary = tuple(Action((a, b), (PRIMARY_SHARE, 1.0 - PRIMARY_SHARE)) for a in STRATEGIES for b in STRATEGIES
                    if a != b)
    union = Action(tuple(STRATEGIES), tuple(1.0 / len(STRATEGIES) for _ in STRATEGIES))
    return {"single": singles, "pairs": singles + pairs, "pairs_all": singles + pairs + (union,),
            "primary": singles + primary, "primary_all": singles + primary + (union,)}


# The action sets the benchmark compares (bench/bench_bandit.py --action-set); the family's default is
# ``DEFAULT_ACTION_SET`` (why: docs/bandit.md).
ACTION_SETS: dict[str, tuple[Action, ...]] = _build_action_sets()
_KNOWN_PLANS: dict[tuple[str, ...], list[tuple[tuple[str, float], ...]]] = {}
for _a in dict.fromkeys(a for plans in ACTION_SETS.values() for a in plans):
    _c = _canonical(_a.strategies, _a.shares)
    _KNOWN_PLANS.setdefault(tuple(s for s, _ in _c), []).append(_c)
DEFAULT_ACTION_SET = "pairs_all"
UNION_ACTION: Action = ACTION_SETS["pairs_all"][-1]

# Retrieval cost per strategy in a plan, in reward units (``default_params["strategy_cost"]``): every strategy a plan
# draws from is one more retrieval call and candidate list to merge. Plans that earn the same engagement (a
# strategy that finds the target alone vs the same strategy inside a pair or the union, which the interleaving
# still puts first) then differ in cost, and the policy commits to the smallest. Chosen by measurement
# (docs/bandit.md "Retrieval cost"; 0.1 was selected with ``clip_p`` on seeds 10/11 and did not confirm on 7-9).
DEFAULT_STRATEGY_COST = 0.05


def plan_cost(strategies: Sequence[Any], strategy_cost: float) -> float:
    """Retrieval cost of a plan drawing from ``strategies`` (names, or canonical (name, share) pairs)."""
    return float(strategy_cost) * len(strategies)


def priced(actions: Sequence[Action], strategy_cost: float) -> list[Action]:
    """``actions`` with ``Action.cost`` set to their ``plan_cost``: what ``train`` learns and ``evaluate`` judges."""
    return [replace(a, cost=plan_cost(a.strategies, strategy_cost)) for a in actions]


def _chosen_costs(chosen: Sequence[int | None], actions: Sequence[Action]) -> np.ndarray:
    """``Action.cost`` of each row's chosen plan (0 for a row whose plan is not in ``actions``: it is skipped)."""
    return np.array([0.0 if c is None else actions[c].cost for c in chosen], dtype=np.float64)


def action_features(action: Action, strategy_feats: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Action features of one plan: its id, each strategy's budget share, share-weighted strategy stats.

    The shares (``in_lexical:0.5``) interact with every query feature via ``-q QS``, so a pair's value starts out
    as the share-weighted values of its strategies and the plan id learns what the pairing adds on top.
    """
    strategy_feats = strategy_feats or {}
    out: dict[str, Any] = {"id": action.key}
    rate = logn = 0.0
    for s, w in zip(action.strategies, action.shares):
        out[f"in_{s}"] = float(w)
        feats = strategy_feats.get(s) or {}
        n = feats.get("s_n_decisions")
        n = 0.0 if n is None or (isinstance(n, float) and math.isnan(n)) else float(n)
        r = feats.get("s_reward_rate")
        r = 0.0 if r is None or (isinstance(r, float) and math.isnan(r)) else float(r)
        rate += w * r
        logn += w * math.log1p(max(n, 0.0))
    out["s_reward_rate"] = rate
    out["s_log_decisions"] = logn
    return out


def cold_start_pmf(actions: Sequence[Action]) -> np.ndarray:
    """What serves before any policy is trained: uniform over every plan of the action set.

    Uniform over the plans, not over the single strategies: the first policy (and the first gate's DR estimate)
    can only learn and judge plans the cold-start logs contain with a non-zero propensity, and a pair that never
    appears in those logs has no off-policy support at all. It is also the better cold start: most plans
    include at least one strategy that suits the query, most single strategies do not.
    """
    return np.full(len(actions), 1.0 / len(actions))


def strategy_action(strategy: str, feats: dict[str, Any] | None) -> dict[str, Any]:
    """Action features of one strategy alone at the full budget (kept for callers that think in strategies)."""
    return action_features(single(strategy), {strategy: feats or {}})


def marginal_shares(actions: Sequence[Action], pmf: np.ndarray,
                    strategies: Sequence[str] = STRATEGIES) -> np.ndarray:
    """Expected share of the candidate budget per strategy under ``pmf`` over ``actions`` (sums to 1)."""
    share = np.zeros((len(actions), len(strategies)))
    col = {s: j for j, s in enumerate(strategies)}
    for i, a in enumerate(actions):
        for s, w in zip(a.strategies, a.shares):
            if s in col:
                share[i, col[s]] = w
    out = np.asarray(pmf, dtype=np.float64) @ share
    return out / out.sum() if out.sum() > 0 else np.full(len(strategies), 1.0 / len(strategies))


@dataclass
class BanditPolicy:
    """The native model: a VW workspace (not picklable: save/load go through VW's model file)."""

    workspace: Any
    actions: list[Action]
    meta: dict[str, Any] = field(default_factory=dict)
    # strategy features -> the actions' ``|Strategy`` lines: they change only when the online store's strategy
    # statistics do (a materialization), not per request; formatting 22 lines was a visible share of action_pmf.
    _action_lines: dict[tuple, list[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def strategies(self) -> list[str]:
        return list(STRATEGIES)

    def example(self, shared: dict[str, Any], strategy_feats: dict[str, dict[str, Any]] | None = None) -> str:
        """``to_vw_example(shared, [action_features(a, strategy_feats) for a in self.actions], None)``, with the
        action lines cached per distinct ``strategy_feats`` (tests/serving/test_scorer_fast_path.py)."""
        try:
            key = tuple((s, tuple(f.items()) if f else ()) for s, f in (strategy_feats or {}).items())
            lines = self._action_lines.get(key)
        except TypeError:        # an unhashable feature value: no caching
            key, lines = None, None
        if lines is None:
            lines = [_action_line(action_features(a, strategy_feats)) for a in self.actions]
            if key is not None:
                if len(self._action_lines) >= 64:
                    self._action_lines.clear()
                self._action_lines[key] = lines
        return _join_example(_shared_line(shared), lines, None)

    def action_pmf(self, shared: dict[str, Any], strategy_feats: dict[str, dict[str, Any]] | None = None
                   ) -> np.ndarray:
        """Probabilities over ``self.actions`` (in that order, sums to 1), exploration included."""
        p = np.asarray(self.workspace.predict(self.example(shared, strategy_feats)), dtype=np.float64)
        return p / p.sum()

    def pmf(self, shared: dict[str, Any], strategies: Sequence[str],
            action_feats: dict[str, dict[str, Any]] | None = None) -> np.ndarray:
        """Expected budget share per strategy (in ``strategies`` order, sums to 1): the policy seen per strategy."""
        return marginal_shares(self.actions, self.action_pmf(shared, action_feats), strategies)


def _strategy_col(feat: str, strategy: str) -> str:
    return f"{feat}__{strategy}"


def _snap(plan: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
    """The known plan (``ACTION_SETS``) with the same strategies and the nearest shares, else ``plan`` itself.

    Logged budgets are whole candidates (the union of six at 50 is 9/9/8/8/8/8), so logged shares differ from a
    plan's nominal ones (1/6) by up to 1/total: without snapping, such decisions would match no plan.
    """
    names = tuple(s for s, _ in plan)
    best, best_d = plan, 0.05                   # at most 0.05 of the budget per strategy away
    for known in _KNOWN_PLANS.get(names, ()):
        d = max(abs(w - kw) for (_, w), (_, kw) in zip(plan, known))
        if d <= best_d:
            best, best_d = known, d
    return best


def _logged_plans(frame: pd.DataFrame) -> list[tuple[tuple[str, float], ...]]:
    """The canonical plan of every logged row: from ``strategies`` + ``budgets`` when present, else ``strategy``;
    snapped to the known plan it was drawn from (``_snap``)."""
    return [_snap(p) for p in _raw_logged_plans(frame)]


def _raw_logged_plans(frame: pd.DataFrame) -> list[tuple[tuple[str, float], ...]]:
    if "strategies" in frame.columns:
        strategies = frame["strategies"].tolist()
        budgets = frame["budgets"].tolist() if "budgets" in frame.columns else [None] * len(frame)
        fallback = frame["strategy"].tolist() if "strategy" in frame.columns else [None] * len(frame)
        out = []
        for ss, bb, s in zip(strategies, budgets, fallback):
            if ss is None or (isinstance(ss, float) and math.isnan(ss)) or len(ss) == 0:
                out.append(_canonical([s], [1.0]))
                continue
            ss = list(ss)
            bb = [1.0] * len(ss) if bb is None or (isinstance(bb, float) and math.isnan(bb)) else list(bb)
            out.append(_canonical(ss, bb))
        return out
    return [_canonical([s], [1.0]) for s in frame["strategy"].tolist()]


@dataclass
class Logged:
    """Logged decisions as the evaluator and the trainer need them (one entry per usable row)."""

    shared: list[dict[str, Any]]
    strategy_feats: list[dict[str, dict[str, Any]]]
    plan: list[tuple[tuple[str, float], ...]]
    reward: np.ndarray
    propensity: np.ndarray


def _shared_and_feats(frame: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Per row, ``bandit_context`` and the strategy stats by strategy. Rows with the same context share ONE dict
    (and likewise the stats): logs repeat both a lot (a query's features change once a day, the strategy stats
    too), and a dict per row was ~0.7 GB for the 240k holdout decisions of a 3M-events day. Callers only read
    them (``policy_matrix`` predicts once per distinct pair)."""
    qcols = [c for c in QUERY_FEATURES if c in frame.columns]
    scols = [_strategy_col(f, s) for s in STRATEGIES for f in STRATEGY_FEATURES]
    scols = [c for c in scols if c in frame.columns]
    n = len(frame)
    qn = frame["query_norm"].astype(str).tolist()
    dev = frame["device"].tolist() if "device" in frame.columns else [""] * n
    hour = frame["hour"].astype(int).tolist() if "hour" in frame.columns else [0] * n
    qmat = frame[qcols].to_numpy(dtype=np.float64) if qcols else np.zeros((n, 0))
    smat = frame[scols].to_numpy(dtype=np.float64) if scols else np.zeros((n, 0))
    probes = _probe_rows(frame)
    shared_cache: dict[tuple, dict[str, Any]] = {}
    feats_cache: dict[bytes, dict[str, dict[str, Any]]] = {}
    shared, feats = [], []
    for i in range(n):
        key = (qn[i], dev[i], hour_bucket(hour[i]), qmat[i].tobytes(), probes[i])
        ctx = shared_cache.get(key)
        if ctx is None:
            ctx = bandit_context(qn[i], dev[i], hour[i], dict(zip(qcols, qmat[i].tolist())), probes[i])
            shared_cache[key] = ctx
        skey = smat[i].tobytes()
        sf = feats_cache.get(skey)
        if sf is None:
            vals = dict(zip(scols, smat[i].tolist()))
            sf = {s: {f: vals[_strategy_col(f, s)] for f in STRATEGY_FEATURES if _strategy_col(f, s) in vals}
                  for s in STRATEGIES}
            feats_cache[skey] = sf
        shared.append(ctx)
        feats.append(sf)
    return shared, feats


def _probe_rows(frame: pd.DataFrame) -> list[tuple[tuple, tuple] | None]:
    """Per row, (counts, scores) from the ``probe_counts`` / ``probe_scores`` list columns, or None (not logged)."""
    n = len(frame)
    if not all(c in frame.columns for c in PROBE_COLUMNS):
        return [None] * n
    out: list[tuple[tuple, tuple] | None] = []
    for c, t in zip(frame[PROBE_COLUMNS[0]].tolist(), frame[PROBE_COLUMNS[1]].tolist()):
        if c is None or t is None or (isinstance(c, float) and math.isnan(c)) or len(c) != len(STRATEGIES):
            out.append(None)
        else:
            out.append((tuple(c), tuple(None if v is None else float(v) for v in t)))
    return out


def logged_decisions(frame: pd.DataFrame) -> Logged:
    """Context, strategy stats, plan, reward and propensity of every logged decision (frame order)."""
    shared, feats = _shared_and_feats(frame)
    return Logged(shared=shared, strategy_feats=feats, plan=_logged_plans(frame),
                  reward=frame["reward"].to_numpy(dtype=np.float64),
                  propensity=frame["propensity"].to_numpy(dtype=np.float64))


def _training_text(frame: pd.DataFrame, actions: Sequence[Action], out: Any | None = None
                   ) -> tuple[list[str], int, int]:
    """VW text of every usable logged decision: (examples, number written, rows skipped).

    With ``out`` (a text file) each example is written there followed by a blank line and not kept (a million
    decisions x 22 plan lines is gigabytes of text); without it the examples are returned. The same line
    formatters as ``to_vw_example`` (``_join_example`` = ``_split_at`` + ``_labelled_example``), with the lines
    cached per distinct context and the action lines' split per distinct strategy-stats vector and chosen plan:
    logs repeat both a lot (a query's features change once a day), and formatting is what a per-row
    Python loop spends its time on.
    """
    index = {_canonical(a.strategies, a.shares): i for i, a in enumerate(actions)}
    chosen = [index.get(p) for p in _logged_plans(frame)]
    n = len(frame)
    qcols = [c for c in QUERY_FEATURES if c in frame.columns]
    scols = [_strategy_col(f, s) for s in STRATEGIES for f in STRATEGY_FEATURES]
    scols_present = [c for c in scols if c in frame.columns]
    qn = frame["query_norm"].astype(str).tolist()
    dev = frame["device"].tolist() if "device" in frame.columns else [""] * n
    hour = frame["hour"].astype(int).tolist() if "hour" in frame.columns else [0] * n
    qmat = frame[qcols].to_numpy(dtype=np.float64) if qcols else np.zeros((n, 0))
    smat = frame[scols_present].to_numpy(dtype=np.float64) if scols_present else np.zeros((n, 0))
    cost = reward_to_cost(frame["reward"].to_numpy(dtype=np.float64), _chosen_costs(chosen, actions))
    prop = frame["propensity"].to_numpy(dtype=np.float64)
    probes = _probe_rows(frame)
    shared_cache: dict[tuple, str] = {}
    action_cache: dict[bytes, list[str]] = {}
    split_cache: dict[tuple[bytes, int], tuple[str, str]] = {}     # (stats, chosen plan) -> ``_split_at``
    examples: list[str] = []
    written = skipped = 0
    for i in range(n):
        c = chosen[i]
        if c is None:
            skipped += 1
            continue
        qrow = qmat[i]
        key = (qn[i], dev[i], hour_bucket(hour[i]), qrow.tobytes(), probes[i])
        line = shared_cache.get(key)
        if line is None:
            line = _shared_line(bandit_context(qn[i], dev[i], hour[i], dict(zip(qcols, qrow.tolist())), probes[i]))
            if len(shared_cache) >= _MEMO_MAX:      # bounded: most rows of a big log have a context of their own
                shared_cache.clear()
            shared_cache[key] = line
        srow = smat[i]
        skey = srow.tobytes()
        split = split_cache.get((skey, c))
        if split is None:
            alines = action_cache.get(skey)
            if alines is None:
                vals = dict(zip(scols_present, srow.tolist()))
                sf = {s: {f: vals.get(_strategy_col(f, s)) for f in STRATEGY_FEATURES} for s in STRATEGIES}
                alines = [_action_line(action_features(a, sf)) for a in actions]
                action_cache[skey] = alines
            split = split_cache[(skey, c)] = _split_at(alines, c)
        example = _labelled_example(line, split, (c, cost[i], prop[i]))
        if out is None:
            examples.append(example)
        else:
            out.write(example)
            out.write("\n\n")
        written += 1
    return examples, written, skipped


# VW flags for training only (not the model's: not saved in its file, not in ``meta["vw_args"]``). cb_adf's
# --no_predict skips the prediction over every plan that it otherwise computes before each update only to report
# it (progressive loss, -p): the update does not use it, the saved model is byte-identical with and without it
# (tests/ml/families/test_bandit.py), and under SquareCB it was a third of VW's training time (1M decisions).
TRAIN_ONLY_VW_ARGS = "--no_predict"


def _can_fork() -> bool:
    import multiprocessing

    return hasattr(__import__("os"), "mkfifo") and "fork" in multiprocessing.get_all_start_methods()


def _grow_pipe(fd: int, size: int = 1 << 20) -> None:
    """Give the FIFO a 1 MB buffer (Linux; the default 64 kB holds ~20 examples): the writer and VW's parser then
    wait on each other less (150k decisions: the writer's context switches 6.5k -> 0.7k, VW's CPU about 10% lower).
    Best effort: elsewhere, or above the system's pipe-max-size, the default stays."""
    import fcntl

    if hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            pass


def _write_text_child(frame: pd.DataFrame, actions: Sequence[Action], path: str, conn: Any) -> None:
    """Forked child: the training text of ``frame`` into the FIFO ``path``; (written, skipped) back on ``conn``.
    The FIFO is opened first and always closed, so VW (its reader) sees EOF even if formatting fails."""
    written = skipped = -1
    try:
        with open(path, "w", buffering=1 << 20) as fh:
            _grow_pipe(fh.fileno())
            _, written, skipped = _training_text(frame, actions, fh)
    finally:
        conn.send((written, skipped))
        conn.close()


def _train_streamed(frame: pd.DataFrame, actions: Sequence[Action], fifo: Path, vw_args: str
                    ) -> tuple[Any, int, int]:
    """VW learns from a FIFO (``-d``) that a forked child fills with ``_training_text``: formatting and VW's
    parse + learn overlap on two cores. Fork, not spawn: the child inherits the frame without pickling it."""
    import multiprocessing
    import os

    os.mkfifo(fifo)
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_write_text_child, args=(frame, actions, str(fifo), send), daemon=True)
    child.start()
    send.close()
    try:
        ws = _workspace(f"{vw_args} -d {fifo}")
    finally:
        child.join()
    written, skipped = recv.recv() if recv.poll(5) else (-1, -1)
    if child.exitcode != 0 or written < 0:
        raise RuntimeError(f"bandit: formatting the training text failed in the writer process "
                           f"(exit code {child.exitcode}); VW saw a truncated stream")
    return ws, written, skipped


# label_bandit columns the family reads (``policy_version`` is not used), and those read as categoricals.
LABEL_COLUMNS: tuple[str, ...] = ("request_id", "event_timestamp", "query_norm", "device", "hour", "strategy",
                                  "strategies", "budgets", "propensity", "reward", *PROBE_COLUMNS)
DICTIONARY_COLUMNS: tuple[str, ...] = ("query_norm", "device", "strategy")
QUERY_VIEW, STRATEGY_VIEW = "query_stats_fv", "strategy_stats_fv"   # the two views of feature service bandit_v1


class BanditFamily:
    """VW contextual bandit over retrieval plans (``ACTION_SETS[params['action_set']]``)."""

    name = "bandit"
    registered_model = "ltrr-bandit"
    # Gate (ml/ope.py): the challenger's doubly robust value on the holdout, LOWER 95% bootstrap bound, must beat
    # the champion's DR point estimate on the same holdout (``champion_metric``): promotion needs evidence that
    # the new policy is better, not merely no evidence that it is worse. min_delta: "beats" is strict.
    # Both are judged on the same holdout (``split``): a hash share of the last ``holdout_days`` days' decisions.
    gate_spec = GateSpec(metric="dr_lower", direction="max", floor=0.0, min_delta=1e-9, champion_metric="dr_value")
    # The first version's incumbent is the cold-start policy (uniform over the plans), whose value on its own logs
    # is the logged mean: the same rule applies, its DR lower bound must beat that (lower bound / logged mean > 1).
    # So the cold start keeps logging with full support until a policy earns it. The former first-version floor,
    # "not significantly worse" (upper bound / logged mean >= 1), promoted the 7-day demo's first-night policy on
    # 141 holdout decisions (lower bound 0.13 vs 0.60 logged): a weak policy, whose own logs then gave too little
    # support for any challenger to be judged better (docs/bandit.md, "Promotion rule").
    extra_floors: ClassVar[dict[str, float]] = {"dr_lower_ratio": 1.0 + 1e-9}
    default_params: ClassVar[dict[str, Any]] = {
        "action_set": DEFAULT_ACTION_SET,
        # retrieval cost per strategy in a plan, in reward units (``plan_cost``): training learns reward minus it and
        # ``evaluate`` (hence the gate) judges the same net value, with the family's default for every model
        "strategy_cost": DEFAULT_STRATEGY_COST,
        # VW's exploration: "squarecb" (SquareCB: each plan's probability falls with its estimated gap to the best,
        # so clearly bad plans are rarely tried and close ones often), "epsilon" (greedy + epsilon/K each) or "bag"
        # (5 bootstrapped policies). SquareCB earned the most in bench/bench_bandit.py (docs/bandit.md).
        "exploration": "squarecb",
        # SquareCB's greediness: gamma = gamma_scale * t^gamma_exponent (VW's defaults 10 and 0.5); larger
        # puts less mass on plans estimated to be worse. Measured by shadow learners (docs/bandit.md).
        "gamma_scale": 10.0,
        "epsilon": 0.05,         # used by "epsilon" and "bag"
        # VW feature crosses: "QS" = every context feature x every plan feature (the plan's id and shares)
        "interactions": "QS",
        # VW's multi-task regression (its cb_adf default): it updates the chosen plan's line only, where "dr" runs
        # the cost-sensitive reduction over all 22 plan lines: 2.5x the training time (1M decisions in 37 s vs
        # 93 s here) for no better policy in bench/bench_bandit.py (shadow learner "pairs_all:dr").
        # Promotion still judges with DR (ml/ope.py), whatever the learner.
        "cb_type": "mtr",
        # VW's --clip_p: MTR regresses the chosen plan's cost with importance weight 1 / max(p, clip_p). At 1.0 every
        # logged decision weighs 1 (a direct-method regression on the chosen plans): SquareCB's late policy serves
        # the plans it thinks worse with p ~ 0.002-0.01, and a weight of 100-500 on one lucky draw (reward 4) moved
        # that plan's estimate all the way to 4 (VW's importance-invariant update), every night again (training is
        # from scratch), so the final policy often favoured a plan 0.1-0.3 worse (docs/bandit.md "Favoured
        # strategy"). 0 = VW's default, no clipping. Promotion still judges with DR, which does weight.
        "clip_p": 1.0,
        "learning_rate": 0.5,
        "power_t": 0.5,
        "passes": 1,
        "stream_min_decisions": 100_000,   # from this size on, format and learn in parallel (train, FIFO)
        "bits": 18,
        "seed": 0,
        "min_train_decisions": 50,
        "min_holdout_decisions": 20,
        # the gate's holdout (``split``): this hash share of the requests of the last ``holdout_days`` days. One
        # day logged by a greedy champion holds too few decisions on other plans to judge a challenger (the 7-day
        # demo: DR lower bounds of -0.9..0.8 against champion estimates of 0.8-0.95); several days hold more
        # decisions, and the cold start's uniform days while they are recent.
        "holdout_days": 3,
        "holdout_share": 0.5,
        "ope_bootstrap": 500,
        "ope_confidence": 0.95,
    }

    # ---- data ----
    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Decisions (``label_bandit``) + point-in-time Feast features of service ``bandit_v1``.

        ``bandit_v1`` joins query stats by ``query_norm`` and strategy stats by ``strategy``; the policy needs the
        stats of EVERY strategy at decision time, not only the chosen one. Feast does every point-in-time join
        (one PIT implementation, the one the online store mirrors): the query view once on the decisions, the
        strategy view once per strategy with every decision keyed by that strategy, pivoted to
        ``s_<feat>__<strategy>`` columns. Not one join over decisions x strategies: that 6x frame and its feature
        columns were the task's peak memory at 3M events a day (docs/scale.md).
        """
        import pyarrow.parquet as pq

        path = Path(ctx.marts_dir) / "label_bandit.parquet"
        columns = [c for c in LABEL_COLUMNS if c in pq.read_schema(path).names]
        decisions = read_mart(path, columns, categorical=[c for c in DICTIONARY_COLUMNS if c in columns])
        if decisions.empty:
            raise NotEnoughData("label_bandit is empty")
        if ctx.feast_repo is None:
            return decisions
        from ml.feature_store import historical_features  # Feast is heavy; only the training path needs it

        ts = decisions["event_timestamp"]
        queries = historical_features(ctx.feast_repo, ctx.feast_env,
                                      pd.DataFrame({"query_norm": decisions["query_norm"], "event_timestamp": ts}),
                                      "bandit_v1", views=(QUERY_VIEW,))
        for name in QUERY_FEATURES:
            decisions[name] = queries[name].to_numpy() if name in queries else np.nan
        del queries
        for s in STRATEGIES:
            stats = historical_features(ctx.feast_repo, ctx.feast_env,
                                        pd.DataFrame({"strategy": np.full(len(ts), s, dtype=object),
                                                      "event_timestamp": ts}),
                                        "bandit_v1", views=(STRATEGY_VIEW,))
            for f in STRATEGY_FEATURES:
                decisions[_strategy_col(f, s)] = stats[f].to_numpy() if f in stats else np.nan
        return decisions

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Holdout: ``holdout_share`` of the requests (fixed hash of ``request_id``) of the last ``holdout_days``
        days; training: every other decision. The model the gate judges is the one registered (no refit on the
        holdout), and since the hash is fixed no champion trained on an earlier night saw tonight's holdout."""
        p = {**self.default_params, **ctx.params}
        return time_split(frame, ctx, group_col="request_id", holdout_share=float(p["holdout_share"]),
                          window_days=int(p["holdout_days"]))

    # ---- model ----
    def _vw_args(self, p: dict[str, Any]) -> str:
        explore = {"epsilon": f"--epsilon {float(p['epsilon'])}",
                   "squarecb": f"--squarecb --gamma_scale {float(p.get('gamma_scale', 10.0))}",
                   "bag": f"--bag 5 --epsilon {float(p['epsilon'])}"}[str(p.get("exploration", "epsilon"))]
        if p.get("exploration") == "squarecb" and p["cb_type"] != "mtr":
            raise ValueError(f"VW's squarecb exploration supports cb_type mtr only (got {p['cb_type']!r})")
        crosses = " ".join(f"-q {q}" for q in str(p.get("interactions", "QS")).split("+") if q)
        clip = f" --clip_p {float(p['clip_p'])}" if float(p.get("clip_p", 0.0)) > 0 else ""
        return (f"--cb_explore_adf {explore} --cb_type {p['cb_type']}{clip} {crosses} "
                f"-l {float(p['learning_rate'])} --power_t {float(p['power_t'])} -b {int(p['bits'])} "
                f"--random_seed {int(p['seed'])} --quiet")

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> BanditPolicy:
        """Learn the policy with VW's own file input (``-d``): the Python per-example ``learn`` loop does about
        17k examples/s here, VW's parser several times that (bench/bench_bandit.py measures 1M decisions)."""
        import tempfile

        p = {**self.default_params, **params}
        actions = priced(ACTION_SETS[str(p["action_set"])], float(p["strategy_cost"]))
        if len(frame) < int(p["min_train_decisions"]):
            raise NotEnoughData(f"bandit: {len(frame)} training decisions (< {p['min_train_decisions']})")
        # Learn in time order: the policy is an online learner and later decisions should weigh as they came.
        df = frame.sort_values("event_timestamp", kind="mergesort") if "event_timestamp" in frame else frame
        passes = int(p["passes"])
        train_args = f"{self._vw_args(p)} {TRAIN_ONLY_VW_ARGS}"
        with tempfile.TemporaryDirectory(prefix="ltrr-vw-") as tmp:
            data = Path(tmp) / "train.vw"
            streamed = passes == 1 and len(df) >= int(p["stream_min_decisions"]) and _can_fork()
            if streamed:
                # Large logs: a forked child formats the text into a FIFO while VW parses and learns from it, so
                # the two halves (at the bench's 1M decisions ~30 s CPU formatting, ~35 s VW parse + learn on its
                # two threads) run on two cores instead of one after the other. One pass only (a FIFO cannot be
                # re-read; --passes > 1 uses the file + VW cache).
                ws, n_written, skipped = _train_streamed(df, actions, data, train_args)
            else:
                with data.open("w", buffering=1 << 20) as fh:
                    _, n_written, skipped = _training_text(df, actions, fh)
            if n_written < int(p["min_train_decisions"]):
                raise NotEnoughData(f"bandit: {n_written} usable training decisions (< {p['min_train_decisions']}; "
                                    f"{skipped} logged plans are not in action set {p['action_set']!r})")
            if not streamed:
                extra = f" --passes {passes} -c --cache_file {Path(tmp) / 'cache'} --holdout_off" if passes > 1 else ""
                ws = _workspace(f"{train_args} -d {data}{extra}")
        meta = {"actions": [[list(a.strategies), list(a.shares)] for a in actions], "action_set": p["action_set"],
                "vw_args": self._vw_args(p), "n_train": n_written, "n_skipped": skipped,
                "params": {k: p[k] for k in ("action_set", "strategy_cost", "exploration", "gamma_scale", "epsilon", "cb_type",
                                             "learning_rate", "interactions", "power_t",
                                             "passes", "bits", "clip_p")}}
        return BanditPolicy(workspace=ws, actions=actions, meta=meta)

    def evaluate(self, model: Any, holdout: pd.DataFrame) -> dict[str, float]:
        """Off-policy value of ``model`` on logged decisions: IPS, SNIPS and DR with bootstrap intervals (ml/ope.py).

        ``model`` has ``actions`` + ``action_pmf`` (a plan policy) or only ``pmf`` over ``STRATEGIES`` (a policy
        over single strategies). A logged plan the model cannot choose gets target probability 0. The DR reward
        model is a cross-fitted ridge on (context features) x (plan's budget shares, plan id), fitted on these logs.
        """
        p = self.default_params
        min_n = int(p["min_holdout_decisions"])
        logged = logged_decisions(holdout)
        n = len(logged.reward)
        if n < min_n:
            raise NotEnoughData(f"bandit: {n} holdout decisions (< {min_n})")
        engagement = float(logged.reward.mean())
        if engagement <= 0:
            raise NotEnoughData("bandit: no reward in the holdout; the policy cannot be judged")
        # the objective training minimises (reward_to_cost): engagement minus the logged plan's retrieval cost,
        # priced with the family's default for every model, so challenger and champion are judged alike
        cost = float(p["strategy_cost"])
        reward = logged.reward - np.array([plan_cost(pl, cost) for pl in logged.plan], dtype=np.float64)
        logged_value = float(reward.mean())
        if logged_value <= 0:
            raise NotEnoughData(f"bandit: holdout reward net of retrieval cost ({logged_value:.3g}) is not positive")
        target, chosen, plans = policy_matrix(model, logged)
        q = ope.fit_reward_model(context_matrix(logged.shared), chosen, reward, len(plans),
                                 plan_features(plans), alpha=1.0, folds=2, seed=0)
        est = ope.estimate(reward, logged.propensity, chosen, target, q, n_boot=int(p["ope_bootstrap"]),
                           confidence=float(p["ope_confidence"]), seed=0)
        greedy = np.zeros_like(target)
        greedy[np.arange(n), target.argmax(axis=1)] = 1.0
        g = ope.estimate(reward, logged.propensity, chosen, greedy, q, n_boot=int(p["ope_bootstrap"]),
                         confidence=float(p["ope_confidence"]), seed=0, estimators=("snips", "dr"))
        out: dict[str, float] = {}
        for name, e in est.items():
            out.update({f"{name}_value": e.value, f"{name}_lower": e.lower, f"{name}_upper": e.upper,
                        f"{name}_se": e.se})
        out.update({
            "logged_value": logged_value,
            "logged_engagement": engagement,
            "strategy_cost": cost,
            "snips_ratio": est["snips"].value / logged_value,
            "dr_ratio": est["dr"].value / logged_value,
            "dr_upper_ratio": est["dr"].upper / logged_value,
            "dr_lower_ratio": est["dr"].lower / logged_value,
            "greedy_snips_value": g["snips"].value,
            "greedy_dr_value": g["dr"].value,
            "ess": ope.effective_sample_size(logged.propensity, chosen, target),
            "n_holdout": float(n),
        })
        return out

    # ---- persistence ----
    def save(self, model: BanditPolicy, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.workspace.save(str(path / MODEL_FILE))
        meta = {**model.meta, "actions": [[list(a.strategies), list(a.shares)] for a in model.actions]}
        (path / META_FILE).write_text(json.dumps(meta, indent=2))

    def load(self, path: Path) -> BanditPolicy:
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        if "actions" in meta:
            actions = [Action(tuple(s), tuple(float(w) for w in sh)) for s, sh in meta["actions"]]
        else:   # a policy saved before plans existed: one action per strategy
            actions = [single(s) for s in meta["strategies"]]
        # The model file carries its reduction stack (cb_explore_adf, epsilon, -q QS); only the file is needed.
        ws = _workspace(arg_list=["-i", str(path / MODEL_FILE), "--quiet"])
        return BanditPolicy(workspace=ws, actions=actions, meta=meta)

    def pyfunc_predict(self, model: BanditPolicy, model_input: pd.DataFrame) -> pd.DataFrame:
        """What the MLflow pyfunc returns: the pmf over the model's plans (columns = plan keys) per row of
        (query, device, hour, q_*, s_*__<strategy>)."""
        frame = model_input.copy()
        if "query_norm" not in frame.columns:
            frame["query_norm"] = frame.get("query", "")
        shared, feats = _shared_and_feats(frame)
        rows = [model.action_pmf(s, f) for s, f in zip(shared, feats)]
        return pd.DataFrame(rows, columns=[a.key for a in model.actions])


def policy_matrix(model: Any, logged: Logged) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """(target pmf (n, K), chosen index (n,), plans) over the union of the model's plans and the logged ones."""
    over_plans = hasattr(model, "actions") and hasattr(model, "action_pmf")
    if over_plans:
        model_plans = [_canonical(a.strategies, a.shares) for a in model.actions]
    else:
        model_plans = [_canonical([s], [1.0]) for s in STRATEGIES]
    # one prediction per distinct (context, strategy stats) pair: logged_decisions shares the dicts of equal rows
    memo: dict[tuple[int, int], np.ndarray] = {}
    pmfs = []
    for s, f in zip(logged.shared, logged.strategy_feats):
        key = (id(s), id(f))
        if key not in memo:
            memo[key] = (model.action_pmf(s, f) if over_plans
                         else np.asarray(model.pmf(s, STRATEGIES, f), dtype=np.float64))
        pmfs.append(memo[key])
    plans = list(dict.fromkeys(model_plans + list(logged.plan)))
    index = {pl: i for i, pl in enumerate(plans)}
    target = np.zeros((len(logged.plan), len(plans)))
    cols = [index[pl] for pl in model_plans]
    if pmfs:
        target[:, cols] = np.vstack(pmfs)
    target /= target.sum(axis=1, keepdims=True)
    chosen = np.fromiter((index[pl] for pl in logged.plan), dtype=np.int64, count=len(logged.plan))
    return target, chosen, plans


def plan_features(plans: Sequence[tuple[tuple[str, float], ...]]) -> np.ndarray:
    """(K, |STRATEGIES| + K) DR action features: budget share per strategy, then the plan's own indicator."""
    col = {s: j for j, s in enumerate(STRATEGIES)}
    F = np.zeros((len(plans), len(STRATEGIES) + len(plans)))
    for i, plan in enumerate(plans):
        for s, w in plan:
            if s in col:
                F[i, col[s]] = w
        F[i, len(STRATEGIES) + i] = 1.0
    return F


def context_matrix(shared: Sequence[dict[str, Any]]) -> np.ndarray:
    """Numeric matrix of ``bandit_context`` dicts for the DR reward model (strings one-hot, booleans 0/1)."""
    from sklearn.feature_extraction import DictVectorizer

    # words are left out: thousands of sparse columns crossed with every plan would swamp a closed-form ridge.
    # Each distinct dict is vectorised once (logged_decisions shares the dict of equal contexts), then indexed.
    first: dict[int, int] = {}
    row_of = np.fromiter((first.setdefault(id(s), len(first)) for s in shared), dtype=np.int64, count=len(shared))
    unique = list({id(s): s for s in shared}.values())
    rows = [{k: (float(v) if isinstance(v, bool) else v) for k, v in s.items() if not k.startswith(WORD_PREFIX)}
            for s in unique]
    return DictVectorizer(sparse=False).fit_transform(rows)[row_of]


FAMILY = BanditFamily()
