"""
# ltrr_nightly: the flywheel's nightly run

For one day of logs (the data interval), in order:

1. **validate_raw**: Great Expectations on the day's raw partitions (schema, nulls, propensities in (0, 1],
   timestamps inside the interval, unique event ids). A failure stops the run here: nothing is materialized,
   trained or promoted, and the champions keep serving. The report names each failed expectation.
2. **dbt_build**: `dbt build` turns raw events into feature and label marts (tested as they are built).
3. **validate_marts**: Great Expectations on the marts.
4. **feast_materialize**: `feast apply`, then materialize the interval into the online store.
5. **train**: one mapped task per model family (bandit, conversion, q2e, attributes): a Feast
   point-in-time training set, an MLflow run, a registered version, a gate against `@champion` on the same
   holdout, and the alias moved only if the gate passes. A family without enough data is skipped.
   **train_dependents** then does the same for the families that read another family's champion
   (`ml.pipeline.READS_CHAMPION_OF`: the ranker, whose `p_conversion` feature comes from tonight's conversion
   champion).
6. **backfill_attributes**: the attributes champion fills missing catalog attributes, with provenance
   (model version, confidence, uncertainty level), into `item_attributes.parquet`; serving's structured
   retrieval and the ranker's `attr_match` feature read them.
7. **notify_scorer**: tells the online scorer to reload its champions.

Every task is keyed by the data interval, so clearing and re-running a day rewrites the same tables.
Configuration comes from `LTRR_*` environment variables (see `ml/settings.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from ml.pipeline import READS_CHAMPION_OF  # light: a dict; which family reads which family's champion
from ml.settings import FAMILIES  # light: pydantic only; one list of families for the whole project

default_args = {"retries": 2, "retry_delay": timedelta(seconds=30)}


@dag(
    dag_id="ltrr_nightly",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    doc_md=__doc__,
    tags=["ltrr", "flywheel"],
)
def ltrr_nightly():
    @task(retries=0)  # a data gate failing is not transient: do not retry it
    def validate_raw(data_interval_start=None, data_interval_end=None) -> str:
        from ml.pipeline import validate_raw_step
        from ml.settings import Settings

        return validate_raw_step(Settings(), data_interval_start, data_interval_end)

    @task
    def dbt_build(data_interval_end=None) -> dict:
        from ml.pipeline import dbt_build_step
        from ml.settings import Settings

        return dbt_build_step(Settings(), data_interval_end)

    @task(retries=0)
    def validate_marts(data_interval_end=None) -> str:
        from ml.pipeline import validate_marts_step
        from ml.settings import Settings

        return validate_marts_step(Settings(), data_interval_end)

    @task
    def feast_materialize(data_interval_start=None, data_interval_end=None) -> dict:
        from ml.pipeline import feast_step
        from ml.settings import Settings

        return feast_step(Settings(), data_interval_start, data_interval_end)

    @task(max_active_tis_per_dagrun=2, map_index_template="{{ family }}")
    def train(family: str, data_interval_start=None, data_interval_end=None) -> dict:
        from airflow.exceptions import AirflowSkipException

        from ml.families.base import NotEnoughData
        from ml.pipeline import train_step
        from ml.settings import Settings

        try:
            return train_step(Settings(), family, data_interval_start, data_interval_end)
        except NotEnoughData as exc:
            raise AirflowSkipException(f"{family}: not enough data ({exc}); the champion keeps serving") from exc

    @task(trigger_rule="none_failed")
    def backfill_attributes() -> dict:
        from ml.pipeline import backfill_attributes_step
        from ml.settings import Settings

        return backfill_attributes_step(Settings())

    @task(trigger_rule="none_failed")
    def notify_scorer(decisions, dependent_decisions) -> dict:
        from ml.pipeline import notify_scorer_step
        from ml.settings import Settings

        # Index by position: iterating the lazy XCom sequence probes one past its end (a logged 404).
        return notify_scorer_step(Settings(), [seq[i] for seq in (decisions, dependent_decisions)
                                               for i in range(len(seq))])

    gated = validate_raw() >> dbt_build() >> validate_marts() >> feast_materialize()
    decisions = train.expand(family=[f for f in FAMILIES if f not in READS_CHAMPION_OF])
    # Families whose training set reads another family's champion (the ranker's p_conversion) train once the
    # first wave has been gated, so they read tonight's champion; a skipped family (not enough data) does not
    # stop them (none_failed), they then read the champion that keeps serving.
    dependent_decisions = train.override(task_id="train_dependents", trigger_rule="none_failed").expand(
        family=[f for f in FAMILIES if f in READS_CHAMPION_OF])
    gated >> decisions >> dependent_decisions
    dependent_decisions >> backfill_attributes() >> notify_scorer(decisions, dependent_decisions)


ltrr_nightly()
