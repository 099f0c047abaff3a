"""One FileSource per feature mart (``{LTRR_MARTS_DIR}/<mart>.parquet``, written by dbt).

The marts folder comes from the environment when the repo is applied (``feast apply`` or
``ml.feature_store.apply``); the resolved path is stored in the registry. Nothing is read at import.
"""

import os
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat


def _mart_path(mart: str) -> str:
    marts_dir = os.environ.get("LTRR_MARTS_DIR")
    if not marts_dir:
        raise RuntimeError("LTRR_MARTS_DIR is not set; it must point at the dbt marts folder (see feature_store.yaml)")
    return str(Path(marts_dir).expanduser().resolve() / f"{mart}.parquet")


def _mart_source(mart: str, description: str) -> FileSource:
    return FileSource(
        name=mart,
        path=_mart_path(mart),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


query_stats_source = _mart_source("feat_query_daily", "One row per normalized query and day.")
strategy_stats_source = _mart_source("feat_strategy_daily", "One row per strategy and day.")
item_stats_source = _mart_source("feat_item_daily", "One row per item and day.")
query_item_stats_source = _mart_source(
    "feat_query_item_daily", "One row per (query, item) and day with any impression."
)
item_catalog_source = _mart_source("dim_items", "One row per item; event_timestamp = created_at.")
