"""The scorer's direct SQLite online reader answers exactly what Feast's ``get_online_features`` answers, on a real
applied and materialized store (random values, NaNs, missing strings, unknown and repeated entities)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import feature_store
from ml.events.schema import STRATEGIES
from ml.features import FEATURE_SERVICES, QUERY_ITEM_FEATURES
from tests.ml.test_feature_store import REPO, end_of, write_marts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def online(tmp_path_factory) -> feature_store.OnlineFeatures:
    base = tmp_path_factory.mktemp("feast-direct")
    marts = base / "marts"
    write_reader_marts(marts, seed=3)
    env = feature_store.feast_env(feast_dir=base / "feast", marts_dir=marts)
    feature_store.apply(REPO, env)
    feature_store.materialize(REPO, env, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC))
    online = feature_store.OnlineFeatures(REPO, env)
    online.test_env = env          # for the cache-invalidation test
    online.test_marts = marts
    return online


def write_reader_marts(marts: Path, seed: int) -> None:
    """The test marts plus 300 random query-item rows (every 17th first feature NaN): what a reader is checked on."""
    write_marts(marts)
    rng = np.random.default_rng(seed)
    extra = pd.DataFrame({"query_norm": [f"q{i % 7}" for i in range(300)],
                          "item_id": [f"i{i}" for i in range(300)],
                          "event_timestamp": end_of("2024-03-02")})
    for f in QUERY_ITEM_FEATURES:
        extra[f] = rng.normal(size=len(extra))
    extra.loc[::17, QUERY_ITEM_FEATURES[0]] = np.nan
    qi = pd.concat([pd.read_parquet(marts / "feat_query_item_daily.parquet"), extra], ignore_index=True)
    qi.to_parquet(marts / "feat_query_item_daily.parquet")


def assert_same_answers(service: str, rows: list[dict], got: list[dict], sdk: list[dict]) -> None:
    """``got`` is the SDK's answer: one dict per row, the same features in the same order, equal values."""
    assert len(got) == len(sdk) == len(rows)
    for i, (d, s) in enumerate(zip(got, sdk)):
        assert list(d) == list(s), (service, i)      # same features, in the same order
        bad = {k: (d[k], s[k]) for k in s if not _same(d[k], s[k])}
        assert not bad, (service, rows[i], bad)


def columns_as_rows(columns: dict, n: int) -> list[dict]:
    """``get_columns``' answer as ``get``'s (one dict per row, the columns' order)."""
    assert all(len(v) == n for v in columns.values())
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _rows_for(service: str) -> list[dict]:
    queries = ["red shoe", "old vase", "q0", "q3", "nobody"]
    items = ["i1", "i2", "i6", "i17", "i34", "i299", "zz", "i1"]          # repeated and unknown items
    if service == "bandit_v1":
        return [{"query_norm": q, "strategy": s} for q in queries for s in (*STRATEGIES, "nope")]
    if service == "attributes_v1":
        return [{"item_id": i} for i in items]
    rows = [{"query_norm": q, "item_id": i} for q in queries for i in items]
    return rows + [{"query_norm": "q3", "item_id": f"i{i}"} for i in range(0, 300, 3)]


def test_the_direct_reader_is_used_for_sqlite(online):
    assert online.reader == "sqlite-direct"


@pytest.mark.parametrize("service", sorted(FEATURE_SERVICES))
def test_direct_reader_equals_feast_get_online_features(online, service):
    rows = _rows_for(service)
    direct, sdk = online.get(service, rows), online.get_sdk(service, rows)
    assert_same_answers(service, rows, direct, sdk)
    # by column (the scorer's ranker lookups): the same answers, whether cached (now) or read from the store
    assert_same_answers(service, rows, columns_as_rows(online.get_columns(service, rows), len(rows)), sdk)
    online.refresh()
    assert_same_answers(service, rows, columns_as_rows(online.get_columns(service, rows), len(rows)), sdk)
    sdk_reader = feature_store.OnlineFeatures(REPO, online.test_env, direct=False)
    assert sdk_reader.reader == "feast-sdk"
    assert_same_answers(service, rows, columns_as_rows(sdk_reader.get_columns(service, rows), len(rows)), sdk)
    # the store really answered: known values, and None for unknown entities
    flat = [v for r in direct for v in r.values()]
    assert any(v is not None for v in flat) and any(v is None for v in flat)


def test_direct_reader_values_known_answers(online):
    got = online.get("ranker_v1", [{"query_norm": "red shoe", "item_id": i} for i in ("i1", "i6", "zz")])
    assert [r["i_ctr"] for r in got] == [102.0, None, None]
    assert [r["brand"] for r in got] == ["acme", "vasey", None]
    # a NaN in the mart is materialized as a null value: None, as the SDK says too
    nan_row = online.get("ranker_v1", [{"query_norm": "q0", "item_id": "i0"}])[0]
    assert nan_row[QUERY_ITEM_FEATURES[0]] is None and isinstance(nan_row[QUERY_ITEM_FEATURES[1]], float)


def test_direct_reader_errors_like_a_lookup_failure(online):
    with pytest.raises(KeyError, match="join key"):
        online.get("ranker_v1", [{"query_norm": "red shoe"}])


def materialize_newer_red_shoe(online) -> None:
    """A Mar 4 row for "red shoe" with every query stat 7.0 in the test marts, materialized into the store."""
    marts = online.test_marts
    q = pd.read_parquet(marts / "feat_query_daily.parquet")
    newer = q[q["query_norm"] == "red shoe"].tail(1).assign(event_timestamp=end_of("2024-03-04"))
    newer[[c for c in q.columns if c.startswith("q_")]] = 7.0
    pd.concat([q, newer], ignore_index=True).to_parquet(marts / "feat_query_daily.parquet")
    feature_store.materialize(REPO, online.test_env, datetime(2024, 3, 4, tzinfo=UTC),
                              datetime(2024, 3, 6, tzinfo=UTC))


def test_cached_rows_follow_a_new_materialization(online):
    """Rows are cached between calls; a materialization (another connection's commit) invalidates them."""
    rows = [{"query_norm": "red shoe", "strategy": "lexical"}]
    before = online.get("bandit_v1", rows)[0]["q_ctr"]
    assert online.get("bandit_v1", rows)[0]["q_ctr"] == before == 3.0      # the Mar 3 row, from the cache
    materialize_newer_red_shoe(online)
    assert online.get("bandit_v1", rows)[0]["q_ctr"] == 7.0
    assert online.get("bandit_v1", rows) == online.get_sdk("bandit_v1", rows)


def test_a_pair_stored_later_is_read_not_remembered_as_absent(online, monkeypatch):
    """The (query, item) view answers absent pairs from its set of stored keys once a helper thread has read it
    (per store generation; probing each key until then); a materialization that adds a pair drops the set, and
    the pair is read, while the new set loads and after."""
    reader = online._direct
    table = next(t for t, keys, _ in reader._plan("ranker_v1") if len(keys) > 1)
    probed: list[bytes] = []
    select = reader._select

    def counting_select(conn, tbl, names, keys):
        if tbl == table:
            probed.extend(keys)
        return select(conn, tbl, names, keys)

    monkeypatch.setattr(reader, "_select", counting_select)

    def lookup(item: str) -> list[dict]:     # a new pair each time (a repeated one is the service cache's)
        rows = [{"query_norm": "brand new query", "item_id": item}, {"query_norm": "q0", "item_id": "i0"}]
        probed.clear()
        got = columns_as_rows(online.get_columns("ranker_v1", rows), 2)
        reader.wait_background()
        assert_same_answers("ranker_v1", rows, got, online.get_sdk("ranker_v1", rows))
        return got

    online.refresh()                      # no rows, no key set: a fresh start
    got = lookup("i1")
    assert all(got[0][f] is None for f in QUERY_ITEM_FEATURES) and len(probed) == 2     # probed: the set is loading
    present = reader._present[table]
    assert len(present) > 0 and all(isinstance(k, bytes) for k in present)
    got = lookup("i2")
    assert all(got[0][f] is None for f in QUERY_ITEM_FEATURES) and probed == []        # absent: no probe
    marts = online.test_marts
    qi = pd.read_parquet(marts / "feat_query_item_daily.parquet")
    new = pd.DataFrame({"query_norm": ["brand new query"], "item_id": ["i3"], "event_timestamp": end_of("2024-03-04"),
                        **{f: [5.0] for f in QUERY_ITEM_FEATURES}})
    pd.concat([qi, new], ignore_index=True).to_parquet(marts / "feat_query_item_daily.parquet")
    feature_store.materialize(REPO, online.test_env, datetime(2024, 3, 4, tzinfo=UTC), datetime(2024, 3, 6, tzinfo=UTC))
    got = lookup("i3")
    assert all(got[0][f] == 5.0 for f in QUERY_ITEM_FEATURES) and len(probed) == 2     # probed while the set loads
    assert reader._present[table] is not present and len(reader._present[table]) == len(present) + 1
    online.refresh()                                                          # forget the rows and the set
    lookup("i4")                                                              # loads the set again
    got = lookup("i3")
    assert all(got[0][f] == 5.0 for f in QUERY_ITEM_FEATURES) and len(probed) == 1     # stored: read


def test_cached_answers_are_copies_and_mix_with_reads(online):
    """A repeated entity row is served from the service's cache: a copy (a caller's edit does not leak into the
    next answer), in order with rows read for the first time, equal to the SDK's answer."""
    first = online.get("ranker_v1", [{"query_norm": "red shoe", "item_id": "i1"}])
    first[0]["i_ctr"] = -1.0
    rows = [{"query_norm": "red shoe", "item_id": i} for i in ("i6", "i1", "zz", "i1")]
    got = online.get("ranker_v1", rows)
    assert [r["i_ctr"] for r in got] == [None, 102.0, None, 102.0]
    assert got[1] is not got[3]
    for d, s in zip(got, online.get_sdk("ranker_v1", rows)):
        assert d.keys() == s.keys() and all(_same(d[k], s[k]) for k in s)


def assert_fast_keys_are_feasts(reader) -> None:
    """The reader's hand-built storage keys (``_fast_keys``) are byte for byte the ones Feast's own serialization
    gives (``_encode_key`` of an ``EntityKey`` proto), for every view of every service, with non-ASCII, empty and
    long values, and an INT64 join key; a value of another type is left to the SDK's conversion (None)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    samples = {ValueType.STRING: ["red shoe", "", "crème brûlée ☕", "x" * 300, "i1"],
               ValueType.INT64: [0, 7, -3, 2**40]}
    checked = 0
    for service in sorted(FEATURE_SERVICES):
        for _, _, keys in reader._views(service):
            for cols in (keys, [(k, c, ValueType.INT64) for k, c, _ in keys]):
                n = max(len(samples[vt]) for _, _, vt in cols)
                values = [tuple(samples[vt][i % len(samples[vt])] for _, _, vt in cols) for i in range(n)]
                fast = reader._fast_keys(cols, values)
                protos = [python_values_to_proto_values([v[j] for v in values], vt) for j, (_, _, vt) in enumerate(cols)]
                slow = [reader._encode_key(EntityKey(join_keys=[k for k, _, _ in cols],
                                                     entity_values=[p[m] for p in protos])) for m in range(n)]
                assert fast == slow, (service, cols)
                assert reader._fast_keys(cols, values) == slow       # again, from the cached value parts
                checked += 1
            assert reader._fast_keys(keys, [tuple(3.5 for _ in keys)]) is None
            ints = [(k, c, ValueType.INT64) for k, c, _ in keys]
            assert reader._fast_keys(ints, [tuple(1 for _ in keys)]) is not None
            assert reader._fast_keys(ints, [tuple(True for _ in keys)]) is None   # True == 1, but not an INT64
            assert reader._fast_keys(keys, [tuple(1 for _ in keys)]) is None     # an int for a STRING key: the SDK's
    assert checked >= 4


def test_hand_built_keys_equal_feasts(online):
    assert_fast_keys_are_feasts(online._direct)
