"""ml/feature_store.py against real Feast (SQL registry on SQLite, SQLite online store, file offline store).

The marts are tiny hand-built Parquet files with known answers. Daily feature rows are stamped at the end of
their day (``D 23:59:59.999999``), as the dbt marts do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import feature_store
from ml.events.schema import STRATEGIES
from ml.features import FEATURE_SERVICES, FEATURE_VIEWS, ITEM_FEATURES, QUERY_FEATURES, QUERY_ITEM_FEATURES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def end_of(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)


def _rows(key_rows: list[dict], features: tuple[str, ...], value_of: str) -> pd.DataFrame:
    """Feature rows whose every feature equals the row's ``value_of`` number (easy to recognise)."""
    df = pd.DataFrame(key_rows)
    for f in features:
        df[f] = df[value_of].astype("float64")
    return df.drop(columns=[value_of])


def write_marts(marts: Path) -> None:
    marts.mkdir(parents=True, exist_ok=True)
    # "red shoe": a row per day Mar 1..3 (value 1, 2, 3). "old vase": one row on Jan 1 (value 9), beyond the
    # 30-day ttl for March entity rows but not for January ones.
    _rows([
        {"query_norm": "red shoe", "event_timestamp": end_of("2024-03-01"), "v": 1},
        {"query_norm": "red shoe", "event_timestamp": end_of("2024-03-02"), "v": 2},
        {"query_norm": "red shoe", "event_timestamp": end_of("2024-03-03"), "v": 3},
        {"query_norm": "old vase", "event_timestamp": end_of("2024-01-01"), "v": 9},
    ], QUERY_FEATURES, "v").to_parquet(marts / "feat_query_daily.parquet")
    _rows([
        {"strategy": s, "event_timestamp": end_of(day), "v": 10 * (i + 1) + d}
        for i, s in enumerate(STRATEGIES) for d, day in enumerate(["2024-03-01", "2024-03-02"], start=1)
    ], ("s_n_decisions", "s_reward_rate"), "v").to_parquet(marts / "feat_strategy_daily.parquet")
    _rows([
        {"item_id": "i1", "event_timestamp": end_of("2024-03-01"), "v": 101},
        {"item_id": "i1", "event_timestamp": end_of("2024-03-02"), "v": 102},
        {"item_id": "i2", "event_timestamp": end_of("2024-03-01"), "v": 201},
    ], ITEM_FEATURES, "v").to_parquet(marts / "feat_item_daily.parquet")
    _rows([
        {"query_norm": "red shoe", "item_id": "i1", "event_timestamp": end_of("2024-03-01"), "v": 11},
        {"query_norm": "red shoe", "item_id": "i2", "event_timestamp": end_of("2024-03-02"), "v": 12},
    ], QUERY_ITEM_FEATURES, "v").to_parquet(marts / "feat_query_item_daily.parquet")
    created = pd.to_datetime(["2024-02-20 00:00", "2024-02-20 00:00", "2024-03-02 08:00"], utc=True)
    pd.DataFrame({
        "item_id": ["i1", "i2", "i6"], "title": ["Red shoes", "Blue shoes", "Glass vase"],
        "description": ["a", "b", "c"], "category": ["shoes", "shoes", "home"],
        "brand": ["acme", None, "vasey"], "color": ["red", "blue", None], "material": ["leather", None, "glass"],
        "price": [50.0, 40.0, 20.0], "created_at": created, "event_timestamp": created,
    }).to_parquet(marts / "dim_items.parquet")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("feast")
    write_marts(base / "marts")
    env = feature_store.feast_env(feast_dir=base / "feast", marts_dir=base / "marts")
    feature_store.apply(REPO, env)
    return env


def test_apply_registers_every_view_and_service(env):
    fs = feature_store.store(REPO, env)
    assert {fv.name for fv in fs.list_feature_views()} == set(FEATURE_VIEWS)
    assert {s.name for s in fs.list_feature_services()} == set(FEATURE_SERVICES)
    assert {e.name for e in fs.list_entities()} >= {"query", "item", "strategy"}
    assert (Path(env["LTRR_FEAST_DIR"]) / "registry.db").exists()


def test_store_refuses_unset_placeholders(tmp_path, monkeypatch):
    monkeypatch.delenv("LTRR_FEAST_DIR", raising=False)
    with pytest.raises(KeyError, match="LTRR_FEAST_DIR"):
        feature_store.store(REPO, {"LTRR_MARTS_DIR": str(tmp_path)})


def test_historical_features_point_in_time_ttl_order_and_labels(env):
    entity_df = pd.DataFrame({
        "query_norm": ["red shoe", "red shoe", "red shoe", "old vase", "old vase", "nobody", "red shoe"],
        "strategy": ["lexical", "semantic", "lexical", "lexical", "lexical", "lexical", "unknown"],
        "event_timestamp": pd.to_datetime([
            "2024-03-02 12:00",   # Mar 1 row (1); the Mar 2 row (stamped end of Mar 2) is in the future
            "2024-03-05 08:00",   # latest earlier row: Mar 3 (3)
            "2024-03-01 12:00",   # only later rows exist -> missing
            "2024-03-05 08:00",   # Jan 1 row is older than the 30-day ttl -> missing
            "2024-01-20 08:00",   # Jan 1 row within ttl (9)
            "2024-03-05 08:00",   # unknown query -> missing
            "2024-03-03 00:00",   # Mar 2 row is usable from Mar 3 00:00 on (2)
        ], utc=True),
        "label": [10, 20, 30, 40, 50, 60, 70],
        "request_id": list("abcdefg"),
    }, index=[7, 3, 5, 1, 0, 2, 9])   # a non-default index, and timestamps deliberately unsorted
    out = feature_store.historical_features(REPO, env, entity_df, "bandit_v1")

    pd.testing.assert_frame_equal(out[entity_df.columns], entity_df)   # rows, order, index, labels untouched
    assert list(out.columns) == [*entity_df.columns, *QUERY_FEATURES, "s_n_decisions", "s_reward_rate"]
    np.testing.assert_array_equal(out["q_ctr"].to_numpy(), [1, 3, np.nan, np.nan, 9, np.nan, 2])
    assert out["q_ctr"].dtype == np.float64
    # strategy stats: lexical is strategy 0 (10 + day), semantic strategy 2 (30 + day); each view is joined on
    # its own keys, so a missing query row does not blank the strategy features (and vice versa)
    np.testing.assert_array_equal(out["s_reward_rate"].to_numpy(), [11, 32, np.nan, 12, np.nan, 12, np.nan])


def test_historical_features_ranker_service_with_catalog_strings(env):
    entity_df = pd.DataFrame({
        "query_norm": ["red shoe", "red shoe", "red shoe", "red shoe"],
        "item_id": ["i1", "i2", "i6", "i1"],
        # naive timestamps are taken as UTC
        "event_timestamp": pd.to_datetime(["2024-03-03 09:00", "2024-03-03 09:00", "2024-03-02 07:00",
                                           "2024-03-02 09:00"]),
        "label": [3, 0, 1, 2],
    })
    out = feature_store.historical_features(REPO, env, entity_df, "ranker_v1")
    assert len(out) == 4 and out["label"].tolist() == [3, 0, 1, 2]
    np.testing.assert_array_equal(out["i_ctr"].to_numpy(), [102, 201, np.nan, 101])
    np.testing.assert_array_equal(out["qi_clicks"].to_numpy(), [11, 12, np.nan, 11])
    np.testing.assert_array_equal(out["q_n_requests"].to_numpy(), [2, 2, 1, 1])
    # i6 is created at Mar 2 08:00: its catalog row does not exist yet at 07:00
    assert out["category"].tolist() == ["shoes", "shoes", None, "shoes"]
    assert out["brand"].tolist() == ["acme", None, None, "acme"]
    np.testing.assert_array_equal(out["price"].to_numpy(), [50.0, 40.0, np.nan, 50.0])


def test_historical_features_of_no_rows(env):
    empty = pd.DataFrame({"item_id": pd.Series([], dtype=object),
                          "event_timestamp": pd.Series([], dtype="datetime64[ns, UTC]")})
    out = feature_store.historical_features(REPO, env, empty, "attributes_v1")
    assert out.empty and list(out.columns) == ["item_id", "event_timestamp", "category", "brand", "color",
                                               "material", "price"]


def test_historical_features_needs_the_join_keys(env):
    with pytest.raises(KeyError, match="item_id"):
        feature_store.historical_features(
            REPO, env, pd.DataFrame({"query_norm": ["x"], "event_timestamp": [pd.Timestamp("2024-03-01", tz="UTC")]}),
            "ranker_v1",
        )


def test_materialize_online_lookups_and_idempotence(env):
    t0, t1 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC)
    feature_store.materialize(REPO, env, t0, t1)          # Mar 3's row (stamped end of Mar 3) is outside
    online = feature_store.OnlineFeatures(REPO, env)
    rows = [{"query_norm": "red shoe", "strategy": "lexical"}, {"query_norm": "nobody", "strategy": "nope"}]
    got = online.get("bandit_v1", rows)
    assert len(got) == 2 and set(got[0]) == set(QUERY_FEATURES) | {"s_n_decisions", "s_reward_rate"}
    assert got[0]["q_ctr"] == 2.0 and got[0]["s_reward_rate"] == 12.0
    assert all(v is None for v in got[1].values())

    items = online.get("ranker_v1", [{"query_norm": "red shoe", "item_id": i} for i in ("i1", "i6", "zz")])
    assert [r["i_ctr"] for r in items] == [102.0, None, None]
    assert [r["category"] for r in items] == ["shoes", "home", None]
    assert [r["color"] for r in items] == ["red", None, None]

    # the same interval again: same values; re-apply keeps the online data
    feature_store.materialize(REPO, env, t0, t1)
    feature_store.apply(REPO, env)
    again = feature_store.OnlineFeatures(REPO, env)
    assert again.get("bandit_v1", rows) == got
    assert again.get("ranker_v1", [{"query_norm": "red shoe", "item_id": i} for i in ("i1", "i6", "zz")]) == items

    # the next interval brings the newer row
    feature_store.materialize(REPO, env, t1, t1 + timedelta(days=2))
    assert again.get("bandit_v1", rows[:1])[0]["q_ctr"] == 3.0
    assert online.get("attributes_v1", []) == []


def _view_specs(env) -> dict[str, bytes]:
    specs = {}
    for fv in feature_store.store(REPO, env).list_feature_views():
        spec = fv.to_proto().spec
        spec.batch_source.ClearField("meta")   # the source's created/updated timestamps change on every apply
        specs[fv.name] = spec.SerializeToString()
    return specs


def test_reapply_is_idempotent(env):
    before = _view_specs(env)
    feature_store.apply(REPO, env)
    assert _view_specs(env) == before
    fs = feature_store.store(REPO, env)
    assert {s.name for s in fs.list_feature_services()} == set(FEATURE_SERVICES)


def _feast_per_timestamp(env, entity_df: pd.DataFrame, service: str) -> pd.DataFrame:
    """The reference: Feast's own point-in-time join, view by view, on EVERY distinct (keys, timestamp)."""
    fs = feature_store.store(REPO, env)
    _, views, _ = feature_store._service_views(fs, service)
    out = entity_df[["event_timestamp"]].copy()
    for view, keys, feats in views:
        on = [*keys, "event_timestamp"]
        distinct = entity_df[on].drop_duplicates(ignore_index=True)
        got = fs.get_historical_features(entity_df=distinct, features=[f"{view}:{f}" for f in feats],
                                         full_feature_names=False).to_df()
        got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True)
        merged = entity_df[on].merge(got[[*on, *feats]], on=on, how="left")
        for f in feats:
            out[f] = merged[f].to_numpy()
    return out


@pytest.mark.parametrize("service", ["bandit_v1", "ranker_v1"])
def test_time_classes_give_feasts_answer_for_every_timestamp(env, service):
    """historical_features joins one timestamp per (keys, time class); the answers must be Feast's own for every
    row, also at the class edges: exactly on a feature timestamp, 1 us before, at feature timestamp + ttl and 1 us
    after (the 30-day ttl of the stats views), and the catalog's created_at."""
    rng = np.random.default_rng(0)
    ttl = pd.Timedelta(days=30)
    marks = [end_of(d) for d in ("2024-01-01", "2024-03-01", "2024-03-02", "2024-03-03")]
    marks += [pd.Timestamp("2024-03-02 08:00", tz="UTC")]
    edges = [t + d for m in marks for t in (m, m + ttl) for d in (-pd.Timedelta(microseconds=1), pd.Timedelta(0),
                                                                  pd.Timedelta(microseconds=1))]
    lo, hi = pd.Timestamp("2024-01-01", tz="UTC").value, pd.Timestamp("2024-04-10", tz="UTC").value
    random = list(pd.to_datetime(rng.integers(lo, hi, 300) // 1000 * 1000, utc=True))
    ts = pd.Series(edges * 3 + random, dtype="datetime64[us, UTC]")
    n = len(ts)
    entity_df = pd.DataFrame({
        "query_norm": rng.choice(["red shoe", "old vase", "nobody"], n),
        "strategy": rng.choice([*STRATEGIES, "unknown"], n),
        "item_id": rng.choice(["i1", "i2", "i6", "zz"], n),
        "event_timestamp": ts,
    })
    entity_df = entity_df[["query_norm", "item_id", "event_timestamp"]] if service == "ranker_v1" else \
        entity_df[["query_norm", "strategy", "event_timestamp"]]
    got = feature_store.historical_features(REPO, env, entity_df, service)
    want = _feast_per_timestamp(env, entity_df, service)
    features = [c for c in want.columns if c != "event_timestamp"]
    assert got[features].notna().any().all()            # every feature has answers, not only misses
    for f in features:
        g, w = got[f].to_numpy(), want[f].to_numpy()
        if got[f].dtype == object:
            w = pd.Series(w, dtype=object).where(pd.notna(w), None).to_numpy()
            assert g.tolist() == w.tolist(), f
        else:
            np.testing.assert_array_equal(g, w.astype("float64"), err_msg=f)
