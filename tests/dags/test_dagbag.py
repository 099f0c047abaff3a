"""The DAG folder parses with no import errors, and the nightly DAG has the documented shape."""

from __future__ import annotations

import itertools

import pytest

from ml.settings import FAMILIES, Settings


@pytest.fixture(scope="module")
def dagbag():
    from ltrr.airflow_env import configure

    settings = Settings()
    configure(settings)
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(settings.dags_dir))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "ltrr_nightly" in dagbag.dag_ids


def test_nightly_structure(dagbag):
    dag = dagbag.get_dag("ltrr_nightly")
    assert dag.doc_md and "validate_raw" in dag.doc_md
    order = ["validate_raw", "dbt_build", "validate_marts", "feast_materialize", "train", "train_dependents",
             "backfill_attributes", "notify_scorer"]
    assert set(dag.task_dict) == set(order)
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.task_dict[upstream].downstream_task_ids, (upstream, downstream)
    # the data gates are never retried (a bad batch is not transient); the rest retry transient failures
    assert dag.task_dict["validate_raw"].retries == 0
    assert dag.task_dict["dbt_build"].retries >= 1
    # train is mapped over every family except those that read another family's champion; those (the ranker,
    # whose p_conversion comes from the conversion champion) train after it, in train_dependents
    first = dag.task_dict["train"].op_kwargs_expand_input.value["family"]
    second = dag.task_dict["train_dependents"].op_kwargs_expand_input.value["family"]
    assert sorted(first + second) == sorted(FAMILIES) and not set(first) & set(second)
    assert second == ["ranker"] and "conversion" in first
    assert dag.task_dict["train_dependents"].upstream_task_ids == {"train"}
    # a family skipped for lack of data must not skip the ranker: it then reads the champion that keeps serving
    assert dag.task_dict["train_dependents"].trigger_rule == "none_failed"
    # the same task body: one shape mapped over the families
    assert dag.task_dict["train_dependents"].python_callable is dag.task_dict["train"].python_callable
    assert dag.task_dict["notify_scorer"].trigger_rule == "none_failed"
    assert {"train", "train_dependents"} <= dag.task_dict["notify_scorer"].upstream_task_ids
