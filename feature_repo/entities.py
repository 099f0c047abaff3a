"""Entities: what the features describe. Join keys match the marts' key columns (docs/architecture.md)."""

from feast import Entity
from feast.value_type import ValueType

query = Entity(
    name="query",
    join_keys=["query_norm"],
    value_type=ValueType.STRING,
    description="A normalized search query (ml.text.normalize_query / the dbt macro).",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A catalog item.",
)

strategy = Entity(
    name="strategy",
    join_keys=["strategy"],
    value_type=ValueType.STRING,
    description="A retrieval strategy the bandit chooses among (ml.events.schema.STRATEGIES).",
)
