"""Retrieval strategies: one interface (`Strategy.retrieve(query, context, k)`), one module each.

Everything is built from the catalog (and item popularity) once, by `build_strategies`; the hot path only
scores a query against prepared arrays. `candidate_scores` gives every candidate the same retrieval
features (lexical, semantic, memory, popularity) whichever strategy found it, as the ranker needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml.events.schema import STRATEGIES
from ml.retrieval.base import ATTRIBUTES, Candidate, CatalogIndex, Strategy, build_index
from ml.retrieval.exploration import ExplorationStrategy
from ml.retrieval.lexical import LexicalStrategy
from ml.retrieval.memory import MemoryStrategy
from ml.retrieval.popularity import PopularityStrategy
from ml.retrieval.semantic import SemanticStrategy
from ml.retrieval.structured import QueryParser, StructuredStrategy

__all__ = [
    "ATTRIBUTES",
    "SCORE_COLUMNS",
    "Candidate",
    "CatalogIndex",
    "Retrieval",
    "Strategy",
    "build_retrieval",
    "build_strategies",
    "candidate_columns",
    "candidate_scores",
    "retrieve_all",
    "retrieve_plan",
    "strategy_probes",
]

SCORE_COLUMNS: tuple[str, ...] = ("lexical_score", "semantic_score", "memory_score", "popularity_score")


def build_strategies(catalog: pd.DataFrame, popularity: pd.Series | None, q2e_model: Any = None,
                     attribute_predictions: dict[str, dict[str, str]] | None = None, seed: int = 0,
                     *, semantic_dims: int = 64) -> dict[str, Strategy]:
    """All six strategies, keyed by name in `ml.events.schema.STRATEGIES` order."""
    return build_retrieval(catalog, popularity, q2e_model, attribute_predictions, seed,
                           semantic_dims=semantic_dims).strategies


@dataclass(frozen=True)
class Retrieval:
    """The strategies plus the catalog index they share (what the scorer keeps in its serving state)."""

    index: CatalogIndex
    strategies: dict[str, Strategy]

    @property
    def popularity(self) -> PopularityStrategy:
        return self.strategies["popularity"]  # type: ignore[return-value]


def build_retrieval(catalog: pd.DataFrame, popularity: pd.Series | None, q2e_model: Any = None,
                    attribute_predictions: dict[str, dict[str, str]] | None = None, seed: int = 0,
                    *, semantic_dims: int = 64) -> Retrieval:
    index = build_index(catalog, popularity, attribute_predictions)
    parser = QueryParser(index)
    built: dict[str, Strategy] = {
        "lexical": LexicalStrategy(index),
        "structured": StructuredStrategy(index, parser),
        "semantic": SemanticStrategy(index, dims=semantic_dims, seed=seed),
        "memory": MemoryStrategy(index, q2e_model),
        "popularity": PopularityStrategy(index, parser),
        "exploration": ExplorationStrategy(index, seed=seed),
    }
    assert tuple(built) == STRATEGIES
    return Retrieval(index=index, strategies=built)


def candidate_columns(strategies: dict[str, Strategy], query: str,
                      candidates: Sequence[Candidate]) -> dict[str, Any]:
    """``candidate_scores`` as plain columns (item_id and strategy as lists of str, scores as float64 arrays).

    What the scorer's hot path works on (no DataFrame per request); ``candidate_scores`` is this in a frame.
    """
    item_ids = [c.item_id for c in candidates]
    cols: dict[str, Any] = {
        "item_id": item_ids,
        "strategy": [c.strategy for c in candidates],
        "retrieval_score": np.fromiter((c.score for c in candidates), dtype=np.float64, count=len(candidates)),
    }
    for col, name in zip(SCORE_COLUMNS, ("lexical", "semantic", "memory", "popularity")):
        cols[col] = strategies[name].score_items(query, item_ids) if item_ids else np.zeros(0)  # type: ignore[attr-defined]
    return cols


def candidate_scores(strategies: dict[str, Strategy], query: str, candidates: Sequence[Candidate]) -> pd.DataFrame:
    """One row per candidate: item_id, strategy, retrieval_score and the four per-strategy feature scores.

    The feature scores are computed for every candidate whichever strategy retrieved it.
    """
    # built once: inserting columns one by one costs more than the scoring
    return pd.DataFrame(candidate_columns(strategies, query, candidates))


def retrieve_all(strategies: dict[str, Strategy], query: str, context: dict, depth: int,
                 names: Sequence[str] = STRATEGIES) -> dict[str, Sequence[Candidate]]:
    """Every strategy's top ``depth`` candidates for one request (``names`` order).

    The scorer retrieves each strategy once at the full budget: the lists are the bandit's per-strategy probes
    (``strategy_probes``) and, as prefixes, any plan's candidates (``retrieve_plan(..., retrieved=...)``): each
    strategy ranks by a fixed score (exploration by fixed per-request keys), so its top-k is the prefix of its
    top-``depth``.
    """
    return {s: strategies[s].retrieve(query, context, int(depth)) for s in names if s in strategies}


def strategy_probes(retrieved: dict[str, Sequence[Candidate]], names: Sequence[str] = STRATEGIES
                    ) -> tuple[list[int], list[float | None]]:
    """(number of candidates, top retrieval score or None) per strategy in ``names`` order.

    What each strategy found for this query, known at request time before the plan is chosen: BM25's top
    score and how many items match the text (lexical), the number of attribute constraints recognized
    (structured: its score is that count plus a popularity prior < 1), the top cosine (semantic), the q2e
    memory's hit count and top confidence (memory), the top popularity, and exploration's top weight. Logged
    raw in the decision row (``probe_counts``, ``probe_scores``); ``ml.families.bandit.bandit_context`` turns
    them into features, for training and serving alike.
    """
    counts = [len(retrieved.get(s) or ()) for s in names]
    scores = [float(retrieved[s][0].score) if retrieved.get(s) else None for s in names]
    return counts, scores


class _Prefix:
    """A strategy answering ``retrieve`` with the prefix of a list already retrieved at a larger depth."""

    def __init__(self, candidates: Sequence[Candidate]) -> None:
        self._candidates = candidates

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]:
        return self._candidates[:k]


def retrieve_plan(strategies: dict[str, Strategy], names: Sequence[str], budgets: Sequence[int], query: str,
                  context: dict, retrieved: dict[str, Sequence[Candidate]] | None = None) -> Sequence[Candidate]:
    """The union of ``budgets[i]`` candidates from each strategy ``names[i]`` (a bandit's retrieval plan).

    Interleaved in proportion to the budgets (a strategy's candidate at rank r gets the key (r + 0.5) / budget,
    merged by key, ties by plan order) so that the head of the list, what a page shows when no ranker reorders
    it, mixes the strategies as the plan says; an item found by several strategies is kept where it comes first,
    credited to that strategy. ``retrieved`` (``retrieve_all``'s lists, at least as deep as the budgets) is used
    instead of retrieving again.
    """
    if retrieved is not None:
        strategies = {**strategies, **{s: _Prefix(c) for s, c in retrieved.items()}}
    keyed: list[tuple[float, int, int, Candidate]] = []
    for j, (name, budget) in enumerate(zip(names, budgets)):
        if budget <= 0:
            continue
        for r, c in enumerate(strategies[name].retrieve(query, context, int(budget))):
            keyed.append(((r + 0.5) / budget, j, r, c))
    keyed.sort()    # by (key, plan position, rank): unique, so the candidates themselves are never compared
    seen: set[str] = set()
    out: list[Candidate] = []
    for _, _, _, c in keyed:
        if c.item_id not in seen:
            seen.add(c.item_id)
            out.append(c)
    return out
