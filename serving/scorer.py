"""The online scorer, usable in-process (the demo drives it with a simulated clock) and by the app.

`load()` does every expensive thing (champions, catalog, strategy indexes, Feast store) into a new immutable
`ServingState` and swaps it in with one assignment: a request reads `self._state` once and finishes on that
state, so a reload never drops or mixes requests. `rank()` only looks up, scores and logs.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.events.schema import STRATEGIES
from ml.events.store import read_events
from ml.features import DEFAULTS, QUERY_FEATURES, STRATEGY_FEATURES
from ml.retrieval import (
    Candidate,
    Retrieval,
    build_retrieval,
    candidate_columns,
    retrieve_all,
    retrieve_plan,
    strategy_probes,
)
from ml.retrieval.exploration import request_rng
from ml.retrieval.structured import StructuredStrategy, attr_match
from ml.settings import FAMILIES, Settings
from ml.text import normalize_query
from serving.event_log import EventLog
from serving.schemas import RankedItem, RankRequest, RankResponse

log = logging.getLogger(__name__)

UNIFORM_POLICY = "uniform"
# The candidate score columns an impression row logs (``candidate_columns``' names), in the row's order.
_LOGGED_SCORES = ("retrieval_score", "lexical_score", "semantic_score", "memory_score", "popularity_score")

ChampionLoader = Callable[[str], "tuple[str, Any] | None"]


@dataclass(frozen=True)
class ServingState:
    """Everything one request needs, built by `Scorer.load()` and never mutated afterwards."""

    loaded_at: datetime
    versions: dict[str, str | None]
    retrieval: Retrieval
    bandit: Any | None = None
    bandit_context: Callable[..., dict] | None = None
    ranker: Any | None = None
    models: dict[str, Any] = field(default_factory=dict)
    online: Any | None = None            # OnlineFeatures, or None when there is no Feast repo
    online_error: str | None = None      # the store exists but could not be opened: every lookup is degraded
    # family -> why its new champion was not loaded on this (re)load (the previous one, if any, kept serving)
    load_errors: dict[str, str] = field(default_factory=dict)
    # VW workspaces are not safe to call from several threads at once; one lock per loaded policy.
    bandit_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def policy_version(self) -> str:
        if self.bandit is None:
            return UNIFORM_POLICY
        return self.versions.get("bandit") or UNIFORM_POLICY


def _default_clock() -> datetime:
    return datetime.now(UTC)


def _bandit_context_fn() -> Callable[..., dict]:
    from ml.families.bandit import bandit_context
    return bandit_context


def _with_query_tagger(retrieval: Retrieval, attributes_model: Any | None) -> Retrieval:
    """Structured retrieval with the attributes champion's ``tag_query`` (when it has one) as query tagger."""
    tagger = getattr(attributes_model, "tag_query", None)
    structured = retrieval.strategies.get("structured")
    if tagger is None or not isinstance(structured, StructuredStrategy):
        return retrieval
    return Retrieval(index=retrieval.index, strategies={**retrieval.strategies,
                                                        "structured": structured.with_tagger(tagger)})


# What serving calls on each family's native model: a version without it is broken, not served.
_REQUIRED_METHODS = {"bandit": "pmf", "ranker": "score"}


def _check_model(family: str, model: Any) -> None:
    method = _REQUIRED_METHODS.get(family)
    if model is None or (method and not callable(getattr(model, method, None))):
        raise TypeError(f"the {family} model {type(model).__name__} has no callable .{method}()")


def _feature_column(values: Sequence, name: str) -> np.ndarray:
    """One feature's looked-up values, missing ones (None, NaN) as the documented default.

    float64 when every value is numeric, else an object array (a string-valued feature such as ``category``):
    ``ranker_frame`` and the conversion model read either through the same ``pd.to_numeric`` semantics, so the
    model input is the same as from the per-row frame this replaced (``tests/serving/test_scorer_fast_path.py``).
    """
    default = DEFAULTS.get(name, 0.0)
    # v != v is NaN of any float type (what pandas.notna catches), without a call per value
    vals = [default if v is None or v != v else v for v in values]  # noqa: PLR0124
    try:
        return np.asarray(vals, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray(vals, dtype=object)


def _feature_columns(columns: Mapping[str, Sequence], names: Sequence[str], n: int) -> dict[str, np.ndarray]:
    """``_feature_column`` for every name, from the online store's columns (``OnlineFeatures.get_columns``: every
    feature of the service over the rows, None where absent); a name the store did not answer is its default.

    Vectorized for the usual case, a numeric column: one float cast (None becomes NaN) and NaN the default; a
    column that is not numeric takes the per-value path.
    """
    out: dict[str, np.ndarray] = {}
    for name in names:
        values = columns.get(name)
        if values is None:
            out[name] = _feature_column([None] * n, name)
            continue
        try:
            col = np.array(values, dtype=np.float64)   # None -> NaN
        except (TypeError, ValueError):
            out[name] = _feature_column(values, name)
            continue
        out[name] = np.where(np.isnan(col), DEFAULTS.get(name, 0.0), col)
    return out


def rows_to_columns(rows: list[dict]) -> dict[str, list]:
    """Per-row lookups (``OnlineFeatures.get``) as columns, None where a row lacks a feature another row has."""
    names = dict.fromkeys(n for r in rows for n in r)
    return {n: [r.get(n) for r in rows] for n in names}


def _model_scores(state: ServingState, cand: dict[str, Any]) -> np.ndarray:
    """The ranker champion's scores of the candidates' columns (``_rank_scores``): one float matrix, no frame.

    ``ranker_matrix`` is ``ranker_frame``'s matrix (training's model input); a ranker that is not a
    ``RankerModel`` (a test double) gets that matrix as ``ranker_frame``'s DataFrame.
    """
    from ml.families.ranker import RankerModel, conversion_feature, ranker_matrix
    from ml.features import CONVERSION_FEATURE, RANKER_FEATURES

    p_conversion = conversion_feature(state.models.get("conversion"), cand)
    X = ranker_matrix(cand, {CONVERSION_FEATURE: p_conversion})
    if not isinstance(state.ranker, RankerModel):
        X = pd.DataFrame(X, columns=list(RANKER_FEATURES))
    return np.asarray(state.ranker.score(X), dtype=np.float64)


def _fill(row: dict, names: Sequence[str]) -> dict[str, Any]:
    """Feature values with the documented defaults where the store has none (new query, new item)."""
    out = {}
    for n in names:
        v = row.get(n)
        out[n] = DEFAULTS.get(n, 0.0) if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return out


class Scorer:
    def __init__(self, settings: Settings, *, feast_repo: Path, clock: Callable[[], datetime] | None = None,
                 rng_seed: int = 0, champion_loader: ChampionLoader | None = None,
                 online_factory: Callable[[], Any] | None = None, event_log: EventLog | None = None) -> None:
        """``champion_loader(family)`` and ``online_factory()`` default to the MLflow registry and Feast."""
        self.settings = settings
        self.feast_repo = Path(feast_repo)
        self.clock = clock or _default_clock
        self.rng_seed = rng_seed
        self._champion_loader = champion_loader
        self._online_factory = online_factory
        self.events = event_log or EventLog(settings.raw_dir)
        self._state: ServingState | None = None
        self._load_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.n_requests = 0
        self.n_degraded = 0

    # ------------------------------------------------------------------ load (everything expensive)
    @property
    def state(self) -> ServingState | None:
        return self._state

    def load(self) -> dict[str, str | None]:
        """Resolve the champions, read the catalog, build retrieval and open the feature store; swap atomically."""
        with self._load_lock:
            old = self._state
            load_errors: dict[str, str] = {}
            champions = {f: self._champion(f, old, load_errors) for f in FAMILIES}
            versions = {f: (c[0] if c else None) for f, c in champions.items()}
            models = {f: c[1] for f, c in champions.items() if c}
            catalog = self._read_catalog()
            retrieval = _with_query_tagger(build_retrieval(
                catalog, self._read_popularity(), models.get("q2e"),
                self._attribute_predictions(models.get("attributes"), catalog, versions.get("attributes")),
                seed=self.rng_seed,
            ), models.get("attributes"))
            bandit, ranker = models.get("bandit"), models.get("ranker")
            online, online_error = self._open_online()
            new = ServingState(
                loaded_at=self.clock(), versions=versions, retrieval=retrieval,
                bandit=bandit, bandit_context=_bandit_context_fn() if bandit is not None else None,
                ranker=ranker,
                models=models, online=online, online_error=online_error, load_errors=load_errors,
            )
            self._state = new  # the swap: one reference assignment
            log.info("scorer loaded: %d items, champions %s", retrieval.index.n, versions)
            if load_errors:
                log.error("scorer kept previous champions for %s", load_errors)
            return versions

    def _champion(self, family: str, old: ServingState | None,
                  errors: dict[str, str] | None = None) -> tuple[str, Any] | None:
        """The family's champion; on a failed load (or a vanished alias) the one being served, noted in ``errors``."""
        kept = (old.versions[family], old.models[family]) if old is not None and old.versions.get(family) else None
        try:
            if self._champion_loader is not None:
                got = self._champion_loader(family)
            else:
                from ml.registry import load_champion
                got = load_champion(self.settings.tracking_uri, family, model_prefix=self.settings.model_prefix)
            if got is not None:
                _check_model(family, got[1])
            elif kept is not None:
                # The alias vanished (or points nowhere): a reload must not demote a serving champion to cold start.
                raise LookupError(f"no @champion for {family} any more")
            return got
        except Exception as exc:
            # A registry hiccup or a broken version must not demote a serving champion to cold start.
            log.exception("loading the %s champion failed; keeping %s", family,
                          f"v{kept[0]}" if kept else "no model (cold start)")
            if errors is not None:
                errors[family] = (f"{type(exc).__name__}: {exc}"[:300] +
                                  (f"; kept v{kept[0]}" if kept else "; serving without this family"))
            return kept

    def _read_catalog(self) -> pd.DataFrame:
        mart = self.settings.marts_dir / "dim_items.parquet"
        if mart.exists():
            return pd.read_parquet(mart)
        return read_events(self.settings.raw_dir, "catalog")  # cold start: before the first dbt build

    def _read_popularity(self) -> pd.Series | None:
        path = self.settings.marts_dir / "feat_item_daily.parquet"
        if not path.exists():
            return None
        f = pd.read_parquet(path, columns=["item_id", "event_timestamp", "i_popularity"])
        latest = f.sort_values("event_timestamp", kind="stable").groupby("item_id").tail(1)
        return latest.set_index("item_id")["i_popularity"].astype(float).fillna(0.0)

    @staticmethod
    def _attribute_predictions(model: Any | None, catalog: pd.DataFrame,
                               version: str | None = None) -> dict[str, dict[str, str]] | None:
        """Fill every attribute the attributes champion extracts, for items whose catalog value is missing.

        Exactly the DAG's backfill (``ml.backfill.backfill_attributes``: the model's per-uncertainty-level
        acceptance, catalog values never replaced), which the ranker's training features read: no serving-only
        floor, so training and serving see the same filled values.
        """
        if model is None or catalog.empty or "title" not in catalog.columns or not getattr(model, "extractors", None):
            return None
        from ml.backfill import backfill_attributes, filled_attributes

        filled = backfill_attributes(model, catalog, str(version))
        return filled_attributes(filled) or None

    def _open_online(self) -> tuple[Any | None, str | None]:
        try:
            if self._online_factory is not None:
                return self._online_factory(), None
            if not (self.feast_repo / "feature_store.yaml").exists():
                return None, None
            from ml.feature_store import OnlineFeatures
            from ml.pipeline import (
                feast_env,  # the profile's Feast config: Redis + SQL registry in production
            )
            env = feast_env(self.settings)
            return OnlineFeatures(self.feast_repo, env), None
        except Exception as exc:
            log.exception("opening the online feature store failed; serving with default features")
            return None, repr(exc)

    def close(self) -> None:
        self.events.close()

    # ------------------------------------------------------------------ the hot path
    def _lookup(self, state: ServingState, service: str, rows: list[dict]) -> tuple[list[dict], bool]:
        """Online features per entity row, and whether we had to fall back to defaults."""
        if state.online is None:
            return [{} for _ in rows], state.online_error is not None
        try:
            return state.online.get(service, rows), False
        except Exception as exc:  # noqa: BLE001 - any store failure degrades to defaults, never fails the request
            log.warning("online lookup %s failed (%r); using defaults", service, exc)
            return [{} for _ in rows], True

    def _lookup_columns(self, state: ServingState, service: str, rows: list[dict]) -> tuple[Mapping[str, Sequence], bool]:
        """``_lookup`` by column (``OnlineFeatures.get_columns``): feature -> values over ``rows``; {} on a fallback
        to defaults."""
        if state.online is None:
            return {}, state.online_error is not None
        try:
            get_columns = getattr(state.online, "get_columns", None)
            if get_columns is None:     # an online store offering only per-row lookups
                return rows_to_columns(state.online.get(service, rows)), False
            return get_columns(service, rows), False
        except Exception as exc:  # noqa: BLE001 - any store failure degrades to defaults, never fails the request
            log.warning("online lookup %s failed (%r); using defaults", service, exc)
            return {}, True

    def _policy(self, state: ServingState, qn: str, req: RankRequest, hour: int,
                probes: tuple[list, list] | None = None) -> tuple[list, np.ndarray, bool]:
        """(retrieval plans, the policy's pmf over them, degraded). A plan (``ml.families.bandit.Action``) is a
        subset of strategies with budget shares; cold start serves every plan of the default action set uniformly;
        a policy that only knows strategies acts over the single strategies at the full budget."""
        from ml.families.bandit import ACTION_SETS, DEFAULT_ACTION_SET, cold_start_pmf, single

        singles = [single(s) for s in STRATEGIES]
        if state.bandit is None:      # cold start: uniform over every plan (why: cold_start_pmf)
            cold = list(ACTION_SETS[DEFAULT_ACTION_SET])
            return cold, cold_start_pmf(cold), False
        rows, degraded = self._lookup(state, "bandit_v1", [{"query_norm": qn, "strategy": s} for s in STRATEGIES])
        query_feats = _fill(rows[0], QUERY_FEATURES)
        action_feats = {s: _fill(r, STRATEGY_FEATURES) for s, r in zip(STRATEGIES, rows)}
        shared = state.bandit_context(qn, req.device, hour, query_feats, probes)
        plans = list(getattr(state.bandit, "actions", None) or singles)
        with state.bandit_lock:
            if hasattr(state.bandit, "action_pmf"):
                pmf = np.asarray(state.bandit.action_pmf(shared, action_feats), dtype=np.float64)
            else:
                plans = singles
                pmf = np.asarray(state.bandit.pmf(shared, STRATEGIES, action_feats), dtype=np.float64)
        if pmf.shape != (len(plans),) or not np.all(np.isfinite(pmf)) or (pmf < 0).any() or pmf.sum() <= 0:
            log.error("bandit pmf invalid (%r); acting uniformly for this request", pmf)
            return plans, np.full(len(plans), 1.0 / len(plans)), degraded
        return plans, pmf / pmf.sum(), degraded

    def _rank_scores(self, state: ServingState, qn: str, cols: dict[str, Any]) -> tuple[np.ndarray, bool]:
        """Ranker scores of the candidates (``candidate_columns``), or their retrieval scores without a ranker."""
        item_ids = cols["item_id"]
        if state.ranker is None or not item_ids:
            return np.asarray(cols["retrieval_score"], dtype=np.float64), False
        looked_up, degraded = self._lookup_columns(state, "ranker_v1",
                                                   [{"query_norm": qn, "item_id": i} for i in item_ids])
        # Column by column (no per-request frame from records): missing values become the documented defaults.
        cand: dict[str, Any] = dict(cols)
        cand.update(_feature_columns(looked_up, [n for n in DEFAULTS if n not in cols], len(item_ids)))
        index = state.retrieval.index
        if "price" in cand and "price" not in cols:  # the catalog knows the price even when the store does not
            pos = index.positions(item_ids)
            known = np.asarray(cand["price"], dtype=float)
            cand["price"] = np.where((known == 0) & (pos >= 0), index.price[pos] if index.n else 0.0, known)
        structured = state.retrieval.strategies.get("structured")
        if structured is not None and hasattr(structured, "parser"):
            cand["attr_match"] = attr_match(structured.parser, index, [qn] * len(item_ids), item_ids)
        # No frame: the shared functions training uses (ranker_matrix, and the conversion champion's
        # P(purchase | click) as the ranker feature p_conversion, passed as an override) read the columns directly.
        return _model_scores(state, cand), degraded

    def rank(self, req: RankRequest) -> RankResponse:
        state = self._state
        if state is None:
            raise RuntimeError("Scorer.rank() called before load()")
        now = self.clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        request_id = req.request_id or uuid.uuid4().hex
        qn = normalize_query(req.query)
        k = req.k or self.settings.page_size
        budget = max(self.settings.candidate_budget, k)
        retrieval = state.retrieval

        # 1. the policy picks a retrieval plan (strategies + budgets); the probability of that whole plan is the
        #    logged propensity
        #    Every strategy is retrieved once at the full budget first: what each found (count, top score) is the
        #    policy's request-time evidence, and any plan's candidates are prefixes of these lists.
        context = {"request_id": request_id, "device": req.device, "hour": now.hour, "user_id": req.user_id}
        retrieved = retrieve_all(retrieval.strategies, qn, context, budget)
        probes = strategy_probes(retrieved)
        plans, pmf, degraded = self._policy(state, qn, req, now.hour, probes)
        j = int(request_rng(self.rng_seed, f"policy:{request_id}").choice(len(plans), p=pmf))
        chosen, budgets = plans[j].logged(budget)
        primary, propensity = chosen[0], float(pmf[j])

        # 2. retrieve each strategy's budget and union them (interleaved by budget share); top up from popularity
        #    (marked as such) when the plan finds fewer than a page
        cands: list[Candidate] = retrieve_plan(retrieval.strategies, chosen, budgets, qn, context, retrieved)
        seen = {c.item_id for c in cands}
        if len(cands) < k:
            cands.extend(retrieval.popularity.top(k - len(cands), exclude=seen))

        # 3. every candidate gets every retrieval feature; the ranker (or retrieval order) decides. Plain columns
        #    and an index array for the page (why: docs/serving.md, "Performance").
        cols = candidate_columns(retrieval.strategies, qn, cands)
        n_candidates = len(cands)
        rank_score, ranker_degraded = self._rank_scores(state, qn, cols)
        degraded = degraded or ranker_degraded
        if state.ranker is not None:
            page = np.argsort(-rank_score, kind="stable")[:k]
        else:
            page = np.arange(min(k, n_candidates))
        randomized = False
        explore = request_rng(self.rng_seed, f"positions:{request_id}")
        if len(page) > 1 and explore.random() < self.settings.position_explore_rate:
            page = page[explore.permutation(len(page))]
            randomized = True

        item_ids = [cols["item_id"][i] for i in page]
        strategies = [cols["strategy"][i] for i in page]
        scores = rank_score[page].tolist()
        self._log(state, req, request_id, now, chosen, budgets, propensity, n_candidates, probes,
                  item_ids, strategies, scores, {c: cols[c][page].tolist() for c in _LOGGED_SCORES}, randomized)
        with self._stats_lock:
            self.n_requests += 1
            self.n_degraded += int(degraded)
        titles, pos = retrieval.index.titles, retrieval.index.position
        items = [
            RankedItem(item_id=i, title=titles[pos[i]], position=p + 1, strategy=st, score=sc)
            for p, (i, st, sc) in enumerate(zip(item_ids, strategies, scores))
        ]
        return RankResponse(
            request_id=request_id, query_norm=qn, items=items, strategy=primary, propensity=propensity,
            policy_version=state.policy_version, n_candidates=n_candidates, degraded=degraded,
        )

    def _log(self, state: ServingState, req: RankRequest, request_id: str, now: datetime, strategies: list[str],
             budgets: list[int], propensity: float, n_candidates: int, probes: tuple[list, list] | None,
             item_ids: list[str], item_strategies: list[str], rank_scores: list[float],
             score_cols: dict[str, list[float]], randomized: bool) -> None:
        self.events.append("requests", [{
            "event_id": request_id, "request_id": request_id, "ts": now, "user_id": req.user_id,
            "session_id": req.session_id, "query": req.query, "device": req.device, "locale": req.locale,
            "hour": now.hour,
        }])
        self.events.append("decisions", [{
            "event_id": request_id, "request_id": request_id, "ts": now, "strategies": list(strategies),
            "budgets": [int(b) for b in budgets], "propensity": propensity, "policy_version": state.policy_version,
            "n_candidates": n_candidates,
            "probe_counts": list(probes[0]) if probes else None, "probe_scores": list(probes[1]) if probes else None,
        }])
        ret, lex, sem, mem, pop = (score_cols[c] for c in _LOGGED_SCORES)
        self.events.append("impressions", [
            {
                "event_id": f"{request_id}:{item_ids[i]}", "request_id": request_id, "ts": now,
                "item_id": item_ids[i], "position": i + 1, "strategy": item_strategies[i],
                "retrieval_score": ret[i], "lexical_score": lex[i], "semantic_score": sem[i], "memory_score": mem[i],
                "popularity_score": pop[i], "rank_score": rank_scores[i], "position_randomized": randomized,
            }
            for i in range(len(item_ids))
        ])
