"""The raw event contract: schemas, validation, the partitioned Parquet store, and user imports."""
