"""Raw event schemas (the contract every producer writes and dbt reads). See docs/architecture.md."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

STRATEGIES: tuple[str, ...] = ("lexical", "structured", "semantic", "memory", "popularity", "exploration")
ENGAGEMENT_TYPES: tuple[str, ...] = ("click", "add_to_cart", "purchase")
DEVICES: tuple[str, ...] = ("desktop", "mobile", "app")

SCHEMAS: dict[str, pa.Schema] = {
    "catalog": pa.schema([
        ("event_id", pa.string()), ("item_id", pa.string()), ("title", pa.string()),
        ("description", pa.string()), ("category", pa.string()), ("brand", pa.string()),
        ("color", pa.string()), ("material", pa.string()), ("price", pa.float64()), ("created_at", TS),
    ]),
    "requests": pa.schema([
        ("event_id", pa.string()), ("request_id", pa.string()), ("ts", TS), ("user_id", pa.string()),
        ("session_id", pa.string()), ("query", pa.string()), ("device", pa.string()),
        ("locale", pa.string()), ("hour", pa.int32()),
    ]),
    "decisions": pa.schema([
        ("event_id", pa.string()), ("request_id", pa.string()), ("ts", TS),
        ("strategies", pa.list_(pa.string())), ("budgets", pa.list_(pa.int32())),
        ("propensity", pa.float64()), ("policy_version", pa.string()), ("n_candidates", pa.int32()),
        # What every strategy found for the query before the plan was chosen (``ml.retrieval.strategy_probes``),
        # in STRATEGIES order: candidate count and top retrieval score (null: none found). The bandit's
        # request-time features are recomputed from these (``ml.families.bandit.probe_features``). Nullable:
        # decisions logged before probes existed have none.
        ("probe_counts", pa.list_(pa.int32())), ("probe_scores", pa.list_(pa.float64())),
    ]),
    "impressions": pa.schema([
        ("event_id", pa.string()), ("request_id", pa.string()), ("ts", TS), ("item_id", pa.string()),
        ("position", pa.int32()), ("strategy", pa.string()), ("retrieval_score", pa.float64()),
        ("lexical_score", pa.float64()), ("semantic_score", pa.float64()), ("memory_score", pa.float64()),
        ("popularity_score", pa.float64()), ("rank_score", pa.float64()),
        # True when the scorer shuffled this page's order (position exploration): clicks on such pages are
        # unbiased by the ranker's order, which is what lets a challenger ranker be judged fairly.
        ("position_randomized", pa.bool_()),
    ]),
    "engagements": pa.schema([
        ("event_id", pa.string()), ("request_id", pa.string()), ("item_id", pa.string()), ("ts", TS),
        ("type", pa.string()),
    ]),
}

# Column whose date decides the partition `dt=YYYY-MM-DD`.
PARTITION_TS: dict[str, str] = {
    "catalog": "created_at", "requests": "ts", "decisions": "ts", "impressions": "ts", "engagements": "ts",
}

# Columns that may be null (everything else is required).
NULLABLE: dict[str, frozenset[str]] = {
    "catalog": frozenset({"description", "brand", "color", "material"}),
    "requests": frozenset({"session_id", "locale"}),
    "decisions": frozenset({"probe_counts", "probe_scores"}),
    "impressions": frozenset({"lexical_score", "semantic_score", "memory_score", "popularity_score",
                              "position_randomized"}),
    "engagements": frozenset(),
}

TABLES: tuple[str, ...] = tuple(SCHEMAS)
