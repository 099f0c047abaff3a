"""Feature views over the feature marts. Feature names come from ``ml.features`` (defined once there).

Every numeric feature is Float64 (counts included: one dtype keeps training frames and online rows alike);
the catalog's attributes are strings.
"""

from datetime import timedelta

from data_sources import (
    item_catalog_source,
    item_stats_source,
    query_item_stats_source,
    query_stats_source,
    strategy_stats_source,
)
from entities import item, query, strategy
from feast import FeatureView, Field
from feast.types import Float64, String

from ml.features import (
    ITEM_CATALOG_FEATURES,
    ITEM_FEATURES,
    QUERY_FEATURES,
    QUERY_ITEM_FEATURES,
    STRATEGY_FEATURES,
)

# Daily stats rows are cumulative/rolling; a row older than this is treated as missing (NaN / None), which the
# scorer fills from ml.features.DEFAULTS. Point-in-time joins look back at most this far.
STATS_TTL = timedelta(days=30)
# The catalog row of an item stays valid until a newer row replaces it (event_timestamp = created_at).
CATALOG_TTL = timedelta(days=3650)

_STRING_FEATURES = {"category", "brand", "color", "material"}


def _fields(names: tuple[str, ...]) -> list[Field]:
    return [Field(name=n, dtype=String if n in _STRING_FEATURES else Float64) for n in names]


query_stats_fv = FeatureView(
    name="query_stats_fv",
    entities=[query],
    ttl=STATS_TTL,
    schema=_fields(QUERY_FEATURES),
    source=query_stats_source,
    online=True,
    description="Per normalized query: traffic, engagement and smoothed reward per strategy (cumulative).",
)

strategy_stats_fv = FeatureView(
    name="strategy_stats_fv",
    entities=[strategy],
    ttl=STATS_TTL,
    schema=_fields(STRATEGY_FEATURES),
    source=strategy_stats_source,
    online=True,
    description="Per retrieval strategy: decisions and smoothed reward rate (cumulative).",
)

item_stats_fv = FeatureView(
    name="item_stats_fv",
    entities=[item],
    ttl=STATS_TTL,
    schema=_fields(ITEM_FEATURES),
    source=item_stats_source,
    online=True,
    description="Per item: impressions, engagement rates, recent popularity, age.",
)

query_item_stats_fv = FeatureView(
    name="query_item_stats_fv",
    entities=[query, item],
    ttl=STATS_TTL,
    schema=_fields(QUERY_ITEM_FEATURES),
    source=query_item_stats_source,
    online=True,
    description="Per (query, item): impressions, clicks, add-to-carts, purchases, smoothed CTR.",
)

item_catalog_fv = FeatureView(
    name="item_catalog_fv",
    entities=[item],
    ttl=CATALOG_TTL,
    schema=_fields(ITEM_CATALOG_FEATURES),
    source=item_catalog_source,
    online=True,
    description="Catalog attributes of an item (newest catalog row wins).",
)
