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
    "candidate_scores",
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


def candidate_scores(strategies: dict[str, Strategy], query: str, candidates: Sequence[Candidate]) -> pd.DataFrame:
    """One row per candidate: item_id, strategy, retrieval_score and the four per-strategy feature scores.

    The feature scores are computed for every candidate whichever strategy retrieved it.
    """
    item_ids = [c.item_id for c in candidates]
    cols: dict[str, object] = {
        "item_id": item_ids,
        "strategy": [c.strategy for c in candidates],
        "retrieval_score": np.fromiter((c.score for c in candidates), dtype=np.float64, count=len(candidates)),
    }
    for col, name in zip(SCORE_COLUMNS, ("lexical", "semantic", "memory", "popularity")):
        cols[col] = strategies[name].score_items(query, item_ids) if item_ids else np.zeros(0)  # type: ignore[attr-defined]
    return pd.DataFrame(cols)  # built once: inserting columns one by one costs more than the scoring
