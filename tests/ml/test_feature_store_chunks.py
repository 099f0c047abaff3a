"""``feature_store.materialize_chunked`` against Feast's own ``materialize`` (real Feast, SQLite online store).

Marts with several days, entities that appear in several windows, rows outside the interval and rows exactly on
its ends: the chunked path (small windows, tiny batches) must leave the online store exactly as Feast's
``FeatureStore.materialize`` does, while never handing the online store more than ``batch_rows`` rows at once.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import feature_store
from ml.events.schema import STRATEGIES
from ml.features import (
    FEATURE_SERVICES,
    ITEM_FEATURES,
    QUERY_FEATURES,
    QUERY_ITEM_FEATURES,
    STRATEGY_FEATURES,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 5, tzinfo=UTC)        # a four-day interval
QUERIES = [f"q{i}" for i in range(12)]
ITEMS = [f"i{i}" for i in range(15)]


def _daily(keys: list[dict], features: tuple[str, ...], rng: np.random.Generator, days: int = 7) -> pd.DataFrame:
    """A row per key and day Feb 28 .. Mar 5 (some days skipped at random), stamped at the end of the day; one
    extra row exactly at END (inclusive bound) and one an hour later (outside)."""
    rows = []
    for k in keys:
        for d in range(days):
            if rng.random() < 0.3:
                continue
            ts = pd.Timestamp("2024-02-28", tz="UTC") + pd.Timedelta(days=d + 1) - pd.Timedelta(microseconds=1)
            rows.append({**k, "event_timestamp": ts})
    rows.append({**keys[0], "event_timestamp": pd.Timestamp(END)})
    rows.append({**keys[1], "event_timestamp": pd.Timestamp(END) + pd.Timedelta(hours=1)})
    df = pd.DataFrame(rows)
    for f in features:
        df[f] = rng.normal(size=len(df)).round(6)
    return df


def write_marts(marts: Path) -> None:
    rng = np.random.default_rng(3)
    marts.mkdir(parents=True, exist_ok=True)
    _daily([{"query_norm": q} for q in QUERIES], QUERY_FEATURES, rng).to_parquet(marts / "feat_query_daily.parquet")
    _daily([{"strategy": s} for s in STRATEGIES], STRATEGY_FEATURES, rng).to_parquet(
        marts / "feat_strategy_daily.parquet")
    _daily([{"item_id": i} for i in ITEMS], ITEM_FEATURES, rng).to_parquet(marts / "feat_item_daily.parquet")
    _daily([{"query_norm": q, "item_id": i} for q in QUERIES[:6] for i in ITEMS[:8]], QUERY_ITEM_FEATURES,
           rng).to_parquet(marts / "feat_query_item_daily.parquet")
    # catalog: items created at scattered times (some before the interval, some inside, one re-listed later)
    created = pd.to_datetime([f"2024-0{2 + (n % 2)}-0{1 + n % 5} {n % 24:02d}:30" for n in range(len(ITEMS))], utc=True)
    dim = pd.DataFrame({
        "item_id": ITEMS, "title": [f"title {i}" for i in ITEMS], "description": "d",
        "category": ["shoes", "bags", "home"] * 5, "brand": [None, "acme", "zeta"] * 5,
        "color": ["red", None, "blue"] * 5, "material": [None] * 15, "price": np.arange(15, dtype=float) + 1.0,
        "created_at": created, "event_timestamp": created,
    })
    relisted = dim.iloc[[2]].assign(price=99.0, created_at=pd.Timestamp("2024-03-04 12:00", tz="UTC"),
                                    event_timestamp=pd.Timestamp("2024-03-04 12:00", tz="UTC"))
    pd.concat([dim, relisted], ignore_index=True).to_parquet(marts / "dim_items.parquet")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[dict[str, str], dict[str, str], list[tuple[str, int]]]:
    """The same marts materialized by Feast (reference) and by materialize_chunked; the chunked call's batches."""
    base = tmp_path_factory.mktemp("chunks")
    write_marts(base / "marts")
    ref = feature_store.feast_env(feast_dir=base / "feast_ref", marts_dir=base / "marts")
    got = feature_store.feast_env(feast_dir=base / "feast_chunked", marts_dir=base / "marts")
    batches: list[tuple[str, int]] = []
    for env in (ref, got):
        feature_store.apply(REPO, env)
    feature_store.materialize(REPO, ref, START, END)
    feature_store.materialize_chunked(REPO, got, START, END, chunk=timedelta(hours=30), batch_rows=4,
                                      on_batch=lambda view, n: batches.append((view, n)))
    return ref, got, batches


ENTITY_ROWS = {
    "bandit_v1": [{"query_norm": q, "strategy": s} for q in [*QUERIES, "never"] for s in STRATEGIES],
    "ranker_v1": [{"query_norm": q, "item_id": i} for q in [*QUERIES[:7], "never"] for i in [*ITEMS, "i99"]],
    "conversion_v1": [{"query_norm": q, "item_id": i} for q in QUERIES[:7] for i in ITEMS],
    "q2e_v1": [{"query_norm": q, "item_id": i} for q in QUERIES[:7] for i in ITEMS],
    "attributes_v1": [{"item_id": i} for i in [*ITEMS, "i99"]],
}


@pytest.mark.parametrize("service", sorted(FEATURE_SERVICES))
def test_chunked_online_store_equals_feast_materialize(stores, service):
    ref, got, _ = stores
    rows = ENTITY_ROWS[service]
    expected = feature_store.OnlineFeatures(REPO, ref, direct=False).get(service, rows)
    actual = feature_store.OnlineFeatures(REPO, got, direct=False).get(service, rows)
    assert actual == expected
    # the comparison is not vacuous: the reference holds values, and misses what is outside the interval
    assert any(v is not None for r in expected for v in r.values())


def test_latest_row_in_the_interval_wins(stores):
    """q0 has a row exactly at END (inclusive) and q1 one an hour after END (excluded)."""
    _, got, _ = stores
    marts = Path(got["LTRR_MARTS_DIR"])
    src = pd.read_parquet(marts / "feat_query_daily.parquet")
    online = feature_store.OnlineFeatures(REPO, got, direct=False)
    for q in ("q0", "q1"):
        inside = src[(src["query_norm"] == q) & (src["event_timestamp"] >= pd.Timestamp(START))
                     & (src["event_timestamp"] <= pd.Timestamp(END))]
        latest = inside.sort_values("event_timestamp").iloc[-1]
        if q == "q0":  # the row stamped exactly END is inside the interval, and the latest there
            assert latest["event_timestamp"] == pd.Timestamp(END)
        value = online.get("bandit_v1", [{"query_norm": q, "strategy": "lexical"}])[0][QUERY_FEATURES[0]]
        assert value == pytest.approx(latest[QUERY_FEATURES[0]])
    # q1 has later rows (outside the interval, one an hour after END) that must not have been written
    assert (src[src["query_norm"] == "q1"]["event_timestamp"] > pd.Timestamp(END)).sum() >= 2


def test_batches_never_exceed_batch_rows_and_windows_add_up(stores):
    _, got, batches = stores
    assert batches and max(n for _, n in batches) <= 4
    marts = Path(got["LTRR_MARTS_DIR"])
    # 30-hour windows over four days: rows per view = sum over windows of the distinct keys in each window
    src = pd.read_parquet(marts / "feat_item_daily.parquet")
    edges = [pd.Timestamp(START) + pd.Timedelta(hours=30 * k) for k in range(4)] + [pd.Timestamp(END)]
    expected = 0
    for k, (lo, hi) in enumerate(itertools.pairwise(edges)):
        last = k == len(edges) - 2
        ts = src["event_timestamp"]
        win = src[(ts >= lo) & ((ts <= hi) if last else (ts < hi))]
        expected += win["item_id"].nunique()
    assert sum(n for v, n in batches if v == "item_stats_fv") == expected
    assert len([1 for v, _ in batches if v == "item_stats_fv"]) > 1


def test_records_the_materialized_interval(stores):
    _, got, _ = stores
    fv = feature_store.store(REPO, got).get_feature_view("item_stats_fv")
    assert any(s == START and e == END for s, e in fv.materialization_intervals)


@pytest.mark.parametrize("kwargs", [{"chunk": timedelta(0)}, {"batch_rows": 0}])
def test_rejects_bad_bounds(stores, kwargs):
    _, got, _ = stores
    with pytest.raises(ValueError, match="materialize_chunked"):
        feature_store.materialize_chunked(REPO, got, START, END, **kwargs)


def test_accepts_airflow_pendulum_datetimes(stores):
    """The DAG passes pendulum DateTimes (data_interval_start/end); the windows must still line up."""
    import pendulum

    _, got, batches = stores
    before = sum(n for v, n in batches if v == "item_stats_fv")
    rows = feature_store.materialize_chunked(REPO, got, pendulum.instance(START), pendulum.instance(END),
                                             chunk=timedelta(hours=30), batch_rows=4)
    assert rows["item_stats_fv"] == before
