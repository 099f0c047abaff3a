"""One FeatureService per model family and version (must match ml.features.FEATURE_SERVICES)."""

from feast import FeatureService
from feature_views import (
    item_catalog_fv,
    item_stats_fv,
    query_item_stats_fv,
    query_stats_fv,
    strategy_stats_fv,
)

bandit_v1 = FeatureService(
    name="bandit_v1",
    features=[query_stats_fv, strategy_stats_fv],
    description="Shared context of the strategy bandit.",
)

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[query_stats_fv, item_stats_fv, query_item_stats_fv, item_catalog_fv],
    description="Learning-to-rank features per (query, candidate item).",
)

conversion_v1 = FeatureService(
    name="conversion_v1",
    features=[item_stats_fv, query_item_stats_fv, item_catalog_fv],
    description="Delayed-feedback conversion model features per click.",
)

q2e_v1 = FeatureService(
    name="q2e_v1",
    features=[query_item_stats_fv, item_stats_fv],
    description="Query-to-entity memory features.",
)

attributes_v1 = FeatureService(
    name="attributes_v1",
    features=[item_catalog_fv],
    description="Catalog attributes the attribute extractors learn from.",
)
