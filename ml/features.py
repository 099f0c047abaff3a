"""Feature names, defined once. Feast feature views, trainers and the scorer all read them from here."""

from __future__ import annotations

from ml.events.schema import STRATEGIES

QUERY_FEATURES: tuple[str, ...] = (
    "q_n_requests", "q_ctr", "q_purchase_rate", "q_len_tokens",
    *(f"q_rate_{s}" for s in STRATEGIES),
)
STRATEGY_FEATURES: tuple[str, ...] = ("s_n_decisions", "s_reward_rate")
ITEM_FEATURES: tuple[str, ...] = (
    "i_impressions", "i_clicks", "i_ctr", "i_atc_rate", "i_purchase_rate", "i_popularity", "i_age_days",
)
QUERY_ITEM_FEATURES: tuple[str, ...] = ("qi_impressions", "qi_clicks", "qi_atc", "qi_purchases", "qi_ctr")
ITEM_CATALOG_FEATURES: tuple[str, ...] = ("category", "brand", "color", "material", "price")

# Feature view name -> its features (Feast views in feature_repo/feature_views.py must match).
FEATURE_VIEWS: dict[str, tuple[str, ...]] = {
    "query_stats_fv": QUERY_FEATURES,
    "strategy_stats_fv": STRATEGY_FEATURES,
    "item_stats_fv": ITEM_FEATURES,
    "query_item_stats_fv": QUERY_ITEM_FEATURES,
    "item_catalog_fv": ITEM_CATALOG_FEATURES,
}

# One feature service per family (feature_repo/feature_services.py must match).
FEATURE_SERVICES: dict[str, tuple[str, ...]] = {
    "bandit_v1": ("query_stats_fv", "strategy_stats_fv"),
    "ranker_v1": ("query_stats_fv", "item_stats_fv", "query_item_stats_fv", "item_catalog_fv"),
    "conversion_v1": ("item_stats_fv", "query_item_stats_fv", "item_catalog_fv"),
    "q2e_v1": ("query_item_stats_fv", "item_stats_fv"),
    "attributes_v1": ("item_catalog_fv",),
}

# Retrieval-time scores the scorer logs per impression and the ranker uses as features.
RETRIEVAL_FEATURES: tuple[str, ...] = (
    "retrieval_score", "lexical_score", "semantic_score", "memory_score", "popularity_score",
)

# Query-item features computed from the catalog (+ filled attributes), not Feast: ``attr_match`` is the number of
# attribute constraints recognized in the query that the item satisfies (ml.retrieval.structured.attr_match).
QUERY_ITEM_CATALOG_FEATURES: tuple[str, ...] = ("attr_match",)

# A model's prediction used as a ranker feature: the conversion champion's P(purchase | click), computed by
# ``ml.families.ranker.conversion_feature`` in training and in serving alike (a constant without a champion).
CONVERSION_FEATURE = "p_conversion"

# Ranker input columns, in order: retrieval scores, one-hot of the retrieving strategy, Feast features,
# catalog query-item features, the conversion model's prediction.
RANKER_FEATURES: tuple[str, ...] = (
    *RETRIEVAL_FEATURES,
    *(f"from_{s}" for s in STRATEGIES),
    *ITEM_FEATURES, *QUERY_ITEM_FEATURES, "q_n_requests", "q_ctr", "price",
    *QUERY_ITEM_CATALOG_FEATURES,
    CONVERSION_FEATURE,
)

# Defaults the scorer uses when the online store has no value (new query, new item).
DEFAULTS: dict[str, float] = {name: 0.0 for views in FEATURE_VIEWS.values() for name in views}


def feature_refs(service: str) -> list[str]:
    """Feast feature references ``view:feature`` for a feature service."""
    return [f"{view}:{feat}" for view in FEATURE_SERVICES[service] for feat in FEATURE_VIEWS[view]]
