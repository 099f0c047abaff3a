"""The direct Redis online reader answers exactly what Feast's ``get_online_features`` answers, on a store applied
to the PostgreSQL registry and materialized into the real Redis (random values, NaNs, missing strings, unknown and
repeated entities, values far older than the views' ttl)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ml import feature_store
from ml.features import FEATURE_SERVICES, QUERY_ITEM_FEATURES
from ml.online_redis import RedisOnlineReader
from tests.ml.test_feature_store import REPO
from tests.serving.test_online_direct import (
    _rows_for,
    assert_fast_keys_are_feasts,
    assert_same_answers,
    columns_as_rows,
    materialize_newer_red_shoe,
    write_reader_marts,
)

pytestmark = pytest.mark.production


@pytest.fixture(scope="module")
def online(prod, tmp_path_factory) -> feature_store.OnlineFeatures:
    marts = tmp_path_factory.mktemp("feast-redis") / "marts"
    write_reader_marts(marts, seed=5)
    env = feature_store.feast_env(feast_dir=prod.feast_dir, marts_dir=marts,
                                  registry_url=prod.postgres_url("feast", driver="psycopg"),
                                  redis_url=prod.redis_url, project=prod.feast_project)
    feature_store.apply(REPO, env)
    feature_store.materialize(REPO, env, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 5, tzinfo=UTC))
    online = feature_store.OnlineFeatures(REPO, env)
    online.test_env = env
    online.test_marts = marts
    return online


@pytest.fixture(scope="module")
def reader(online) -> RedisOnlineReader:
    r = RedisOnlineReader(online._store)
    yield r
    r.close()


def test_the_redis_reader_serves_the_production_store(online):
    assert RedisOnlineReader.supports(online._store)
    assert online.reader == "redis-direct"


@pytest.mark.parametrize("service", sorted(FEATURE_SERVICES))
def test_redis_reader_equals_feast_get_online_features(online, reader, service):
    rows = _rows_for(service)
    got, sdk = reader.get(service, rows), online.get_sdk(service, rows)
    assert_same_answers(service, rows, got, sdk)
    assert_same_answers(service, rows, online.get(service, rows), sdk)      # the scorer's path
    assert_same_answers(service, rows, columns_as_rows(online.get_columns(service, rows), len(rows)), sdk)
    # the store really answered: known values, and None for unknown entities
    flat = [v for r in got for v in r.values()]
    assert any(v is not None for v in flat) and any(v is None for v in flat)


def test_redis_reader_values_known_answers(reader):
    got = reader.get("ranker_v1", [{"query_norm": "red shoe", "item_id": i} for i in ("i1", "i6", "zz")])
    assert [r["i_ctr"] for r in got] == [102.0, None, None]
    assert [r["brand"] for r in got] == ["acme", "vasey", None]
    # a NaN in the mart is materialized as a null value: None, as the SDK says too
    nan_row = reader.get("ranker_v1", [{"query_norm": "q0", "item_id": "i0"}])[0]
    assert nan_row[QUERY_ITEM_FEATURES[0]] is None and isinstance(nan_row[QUERY_ITEM_FEATURES[1]], float)


def test_no_ttl_filter_on_the_redis_path_like_the_sdk(online, reader):
    """Every materialized value here is from 2024, far beyond the views' 30-day ttl: Feast's Redis read path
    returns it anyway (no max-age check outside ``precompute_online``), and so does the reader."""
    rows = [{"query_norm": "old vase", "strategy": "lexical"}, {"query_norm": "red shoe", "strategy": "lexical"}]
    sdk = online.get_sdk("bandit_v1", rows)
    assert [r["q_ctr"] for r in reader.get("bandit_v1", rows)] == [r["q_ctr"] for r in sdk] == [9.0, 3.0]


ROWS_SHARING = [{"query_norm": "red shoe", "item_id": i} for i in ("i1", "i2", "i6", "zz", "i1")]


def test_views_sharing_an_entity_are_read_in_one_hmget(reader, monkeypatch):
    """item_stats_fv and item_catalog_fv live in the same hash per item: one HMGET per distinct entity per hash,
    all in one script call (one round trip) per request."""
    calls: list[tuple[list, list]] = []
    script = reader._script

    def counting_script(keys, args):
        calls.append((keys, args))
        return script(keys=keys, args=args)

    monkeypatch.setattr(reader, "_script", counting_script)
    _forget_rows(reader)
    got = reader.get("ranker_v1", ROWS_SHARING)
    # 1 query + 4 distinct items + 4 distinct (query, item) pairs (the SDK sends 1 + 4 + 4 + 4)
    assert len(calls) == 1 and len(calls[0][0]) == 9 and len(set(calls[0][0])) == 9
    assert calls[0][1][0] == 3        # three hashes: query, item (stats + catalog), query x item
    assert got[0] == got[4] and got[0]["i_ctr"] == 102.0


def _forget_rows(reader) -> None:
    with reader._lock:
        reader._drop_rows()


def test_rows_are_cached_until_redis_says_they_changed(online, reader, monkeypatch):
    """A second read of the same rows sends nothing to Redis; a write by another client to one of those hashes
    (what a materialization or a push does) reaches the reader through Redis' tracking feed before the writer's
    call returns, and the next read answers the new value, as the SDK does."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value
    from redis import Redis

    calls: list[list] = []
    script = reader._script
    monkeypatch.setattr(reader, "_script", lambda keys, args: calls.append(keys) or script(keys=keys, args=args))
    _forget_rows(reader)
    first = reader.get("ranker_v1", ROWS_SHARING)
    assert reader.get("ranker_v1", ROWS_SHARING) == first and len(calls) == 1      # the second: all cached
    assert reader._tracker is not None and reader._n_rows == 9

    item = next(h for h in reader._plan("ranker_v1").hashes if [k for k, _, _ in h.keys] == ["item_id"])
    key = reader._storage_keys(item.keys, [("i1",)])[0]
    view = next(fv.name for _, fv, _ in reader._views("ranker_v1") if "i_ctr" in [f.name for f in fv.features])
    field = _mmh3(f"{view}:i_ctr")
    other = Redis.from_url(f"redis://{reader._client.connection_pool.connection_kwargs['host']}:"
                           f"{reader._client.connection_pool.connection_kwargs['port']}")
    before = other.hget(key, field)
    try:
        other.hset(key, field, Value(double_val=55.5).SerializeToString())
        again = reader.get("ranker_v1", ROWS_SHARING)
        assert [r["i_ctr"] for r in again] == [55.5, first[1]["i_ctr"], first[2]["i_ctr"], None, 55.5]
        assert len(calls) == 2 and len(calls[1]) == 1            # only the changed hash was read again
        assert_same_answers("ranker_v1", ROWS_SHARING, again, online.get_sdk("ranker_v1", ROWS_SHARING))
    finally:
        other.hset(key, field, before)
        other.close()
    assert reader.get("ranker_v1", ROWS_SHARING) == first


def test_no_row_cache_without_tracking(online, reader, monkeypatch):
    """A server that refuses CLIENT TRACKING (older than 6, or an ACL): every read goes to Redis, answers unchanged."""
    calls: list[list] = []
    script = reader._script
    monkeypatch.setattr(reader, "_script", lambda keys, args: calls.append(keys) or script(keys=keys, args=args))
    monkeypatch.setattr(reader, "_start_tracking", lambda: None)
    with reader._lock:
        reader._stop_tracking()
        reader._retry_at = 0.0
    got = [reader.get("ranker_v1", ROWS_SHARING) for _ in range(2)]
    assert len(calls) == 2 and len(calls[1]) == 9 and got[0] == got[1]
    assert_same_answers("ranker_v1", ROWS_SHARING, got[1], online.get_sdk("ranker_v1", ROWS_SHARING))
    monkeypatch.undo()
    with reader._lock:
        reader._retry_at = 0.0                                     # the next test's reads set tracking up again


def test_a_refused_script_falls_back_to_one_pipeline(online, reader, monkeypatch):
    """A server that refuses scripting (EVAL disabled, ACL): the same HMGETs in one pipeline, the same answers,
    and the script is not tried again."""
    from redis.exceptions import ResponseError

    def refused(keys, args):
        raise ResponseError("NOSCRIPT scripting disabled")

    monkeypatch.setattr(reader, "_script", refused)
    _forget_rows(reader)
    pipeline_cls = type(reader._client.pipeline(transaction=False))
    sent: list[tuple[bytes, int]] = []
    executed: list[int] = []
    hmget, execute = pipeline_cls.hmget, pipeline_cls.execute

    def counting_hmget(self, name, keys, *args):
        sent.append((name, len(keys)))
        return hmget(self, name, keys, *args)

    def counting_execute(self, *args, **kwargs):
        executed.append(len(self.command_stack))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_cls, "hmget", counting_hmget)
    monkeypatch.setattr(pipeline_cls, "execute", counting_execute)
    got = reader.get("ranker_v1", ROWS_SHARING)
    assert executed == [9] and len(sent) == 9 and len({name for name, _ in sent}) == 9
    assert reader._script is None
    _forget_rows(reader)
    assert reader.get("ranker_v1", ROWS_SHARING) == got and executed == [9, 9]
    assert_same_answers("ranker_v1", ROWS_SHARING, got, online.get_sdk("ranker_v1", ROWS_SHARING))


def test_redis_reader_errors_like_a_lookup_failure(reader):
    with pytest.raises(KeyError, match="join key"):
        reader.get("ranker_v1", [{"query_norm": "red shoe"}])


def test_redis_reader_sees_a_new_materialization(online, reader):
    """A value cached by the reader and rewritten by a materialization is read anew at once (Redis' tracking feed
    drops the row; keys stay cached, they do not change)."""
    rows = [{"query_norm": "red shoe", "strategy": "lexical"}]
    assert reader.get("bandit_v1", rows)[0]["q_ctr"] == 3.0
    materialize_newer_red_shoe(online)
    assert reader.get("bandit_v1", rows)[0]["q_ctr"] == 7.0
    assert reader.get("bandit_v1", rows) == online.get_sdk("bandit_v1", rows)


def test_redis_hand_built_keys_equal_feasts(reader):
    assert_fast_keys_are_feasts(reader)
