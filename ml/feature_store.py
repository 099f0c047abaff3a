"""The one module that talks to Feast: apply the repo, materialize, training sets, online lookups.

Configuration reaches Feast in two ways, both driven by the ``env`` dict that :func:`feast_env` builds:

* ``feature_store.yaml`` holds ``${VAR}`` placeholders; they are substituted from ``env`` here (a missing one
  is an error, never a literal ``${VAR}`` path);
* ``data_sources.py`` reads ``LTRR_MARTS_DIR`` when the repo's modules are imported, i.e. only at
  :func:`apply`. The resolved Parquet paths are then stored in the registry, so materialization, training sets
  and online lookups need no environment at all beyond the yaml's.

The repo's modules are imported fresh on every :func:`apply` (under a temporarily set environment and
``sys.path``), so two applies with different marts folders in one process do not see stale paths.

Measured on 2 shared cores (Feast 0.67, ``file`` offline store, SQL registry on SQLite, SQLite online store):

* ``historical_features``: ranker_v1, 100k entity rows: 24 s (10 items per request) to 36 s (all rows
  distinct), ~0.7 GB peak; bandit_v1, 60k rows: 10 s. Most of the time is dask's per-step overhead. (Before
  time classes, below: Feast now joins one row per (keys, time class), e.g. a few per strategy for the bandit.)
* ``OnlineFeatures.get`` (Feast Python SDK, warm): bandit_v1 1 row p50 0.5 ms; ranker_v1 100 items p50 20 ms,
  p95 25 ms (up to ~80 ms seen while the cores were busy). ``apply`` ~9 s on a fresh folder (mostly imports),
  0.2 s when nothing changed.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from ml.environ import temporary_environ
from ml.online_common import DirectOnlineReader, EntityColumns, join_views

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # feast is heavy to import; load it only when a function needs it
    from feast import FeatureStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.repo_contents import RepoContents

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------


def feast_env(*, feast_dir: Path, marts_dir: Path, registry_url: str | None = None,
              redis_url: str | None = None, project: str = "ltrr") -> dict[str, str]:
    """The environment the repo needs.

    Embedded (no ``registry_url``): ``LTRR_FEAST_DIR`` (registry.db, online.db) and ``LTRR_MARTS_DIR``, read by
    ``feature_store.yaml``. Production (``registry_url`` and ``redis_url`` given, see
    ``ml.pipeline.feast_env``): ``feature_store.production.yaml`` with its SQL registry on PostgreSQL
    (``registry_url``, an SQLAlchemy URL) and its Redis online store (``redis_url``, a redis:// URL converted to
    Feast's connection string). Paths are made absolute so the registry never stores a relative path.
    """
    env = {
        "LTRR_FEAST_DIR": str(Path(feast_dir).expanduser().resolve()),
        "LTRR_MARTS_DIR": str(Path(marts_dir).expanduser().resolve()),
    }
    if registry_url is not None:
        if not redis_url:
            raise ValueError("the production Feast config needs both registry_url and redis_url")
        env.update({"LTRR_FEAST_YAML": PRODUCTION_YAML, "LTRR_FEAST_REGISTRY_URL": registry_url,
                    "LTRR_FEAST_REDIS": redis_connection_string(redis_url), "LTRR_FEAST_PROJECT": project})
    return env


PRODUCTION_YAML = "feature_store.production.yaml"


def redis_connection_string(redis_url: str) -> str:
    """``redis://[:password@]host:port/db`` -> Feast's ``host:port,db=N[,password=...]`` (plus ``ssl=true``
    for rediss://)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"LTRR_REDIS_URL must be a redis:// or rediss:// URL, got {redis_url!r}")
    out = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
    db = (parts.path or "/0").strip("/") or "0"
    out += f",db={int(db)}"
    if parts.password:
        out += f",password={unquote(parts.password)}"
    if parts.scheme == "rediss":
        out += ",ssl=true"
    return out


def _repo_config(repo_path: Path, env: Mapping[str, str]):
    """Read ``feature_store.yaml`` (or ``env["LTRR_FEAST_YAML"]``, the production file), substituting ``${VAR}``
    from ``env`` (then the process environment)."""
    from feast.repo_config import RepoConfig

    name = env.get("LTRR_FEAST_YAML", "feature_store.yaml")
    if Path(name).name != name:
        raise ValueError(f"LTRR_FEAST_YAML must name a file inside the Feast repo, got {name!r}")
    text = (repo_path / name).read_text()
    # Comments may show placeholders of other profiles; only substitute (and require) live ones.
    live = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    missing = sorted({v for v in _PLACEHOLDER.findall(live) if v not in env and v not in os.environ})
    if missing:
        raise KeyError(f"feature_store.yaml needs {', '.join(missing)}; build env with ml.feature_store.feast_env")
    values = {**os.environ, **env}
    raw = yaml.safe_load(_PLACEHOLDER.sub(lambda m: values[m.group(1)], live))
    config = RepoConfig(**raw)
    config.repo_path = repo_path
    return config


def store(repo_path: Path, env: Mapping[str, str]) -> FeatureStore:
    """A ``FeatureStore`` for the repo with its ``${VAR}``s bound from ``env``.

    Creates ``LTRR_FEAST_DIR`` if needed (SQLite cannot create the folder of its file).
    """
    from feast import FeatureStore

    repo_path = Path(repo_path).resolve()
    if "LTRR_FEAST_DIR" in env:
        Path(env["LTRR_FEAST_DIR"]).mkdir(parents=True, exist_ok=True)
    with temporary_environ(env):
        return FeatureStore(config=_repo_config(repo_path, env))


# ---------------------------------------------------------------------------------------------------------
# apply / materialize
# ---------------------------------------------------------------------------------------------------------


def load_repo(repo_path: Path, env: Mapping[str, str]) -> RepoContents:
    """Import the repo's modules afresh (env set, repo on sys.path) and collect its Feast objects.

    Mirrors ``feast.repo_operations.parse_repo`` (which imports relative to the cwd, and caches modules
    with generic names like ``entities``) for our four modules; they are removed from ``sys.modules`` after.
    """
    repo_path = Path(repo_path).resolve()
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents

    def purge() -> None:
        for name in _REPO_MODULES:
            mod = sys.modules.get(name)
            if mod is not None and Path(getattr(mod, "__file__", "") or "").resolve().parent == repo_path:
                del sys.modules[name]

    contents = RepoContents(projects=[], data_sources=[], entities=[], feature_views=[], feature_services=[],
                            on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[])
    buckets = ((DataSource, contents.data_sources), (FeatureView, contents.feature_views),
               (Entity, contents.entities), (FeatureService, contents.feature_services))
    purge()
    sys.path.insert(0, str(repo_path))
    try:
        with temporary_environ(env):
            for name in _REPO_MODULES:
                module = importlib.import_module(name)
                for attr in dir(module):
                    obj = getattr(module, attr)
                    for kind, bucket in buckets:
                        if isinstance(obj, kind) and not any(obj is o for o in bucket):
                            bucket.append(obj)
    finally:
        sys.path.remove(str(repo_path))
        purge()
    contents.entities.append(DUMMY_ENTITY)  # as `feast apply` does
    return contents


def apply(repo_path: Path, env: Mapping[str, str]) -> None:
    """Register every entity, source, feature view and service of the repo (``feast apply``); idempotent.

    Objects that are in the registry but no longer in the repo are deleted, as ``feast apply`` does.
    """
    from feast.repo_operations import extract_objects_for_apply_delete

    repo_path = Path(repo_path).resolve()
    fs = store(repo_path, env)
    contents = load_repo(repo_path, env)
    for source in contents.data_sources:  # fail here, not at materialize, when a mart is missing
        fs._get_provider().validate_data_source(fs.config, source)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(fs.project, fs.registry, contents)
    fs.apply(to_apply, objects_to_delete=to_delete, partial=False)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def materialize(repo_path: Path, env: Mapping[str, str], start: datetime, end: datetime) -> None:
    """Load the latest feature row per entity with ``start <= event_timestamp <= end`` into the online store.

    Keyed by the interval: the online store upserts by (entity, view), so re-running an interval rewrites the
    same values. Naive datetimes are taken as UTC.
    """
    import io

    fs = store(Path(repo_path).resolve(), env)
    # Feast prints a coloured progress banner per view to stdout; keep the caller's output readable.
    with contextlib.redirect_stdout(io.StringIO()):
        fs.materialize(start_date=_utc(start), end_date=_utc(end))


def materialize_chunked(repo_path: Path, env: Mapping[str, str], start: datetime, end: datetime, *,
                        chunk: timedelta = timedelta(days=1), batch_rows: int = 20_000,
                        memory_limit: str = "1GB", on_batch: Callable[[str, int], None] | None = None,
                        ) -> dict[str, int]:
    """What :func:`materialize` does (latest row per entity with ``start <= event_timestamp <= end``, into the
    online store), in bounded memory: the interval is cut into ``chunk``-long time windows, processed oldest
    first, and each window's latest rows per entity are streamed to the online store ``batch_rows`` at a time.
    Returns rows written per feature view; ``on_batch(view, rows)`` is called for every batch (tests, progress).

    Why not ``FeatureStore.materialize`` alone: with the ``file`` offline store, Feast's pull sorts the WHOLE
    source (every day of the mart, in dask) before filtering the interval, then converts the whole interval to
    protos in one list (``materialization_config.online_write_batch_size`` unset): memory grows with the
    mart's history and the interval. Feast's DuckDB offline store would push the filter down, but it needs ibis,
    which is not installed here. So the read side is the same query done by DuckDB over the source's Parquet
    (timestamp filter pushed down, ``QUALIFY row_number()`` for latest-per-key, spilling past
    ``memory_limit``), and the write side is Feast's own (``_convert_arrow_to_proto`` + the provider's
    ``online_write_batch``, exactly what its local materialization engine calls), then
    ``registry.apply_materialization`` records the interval as ``materialize`` does. Windows are written in
    time order, so an entity seen in several windows ends with its latest row, as with one big pull (the sqlite
    online store overwrites; Redis keeps the newer timestamp). Views that are not plain FileSource views (field
    mappings, no join key) go through ``FeatureStore.materialize``.
    """
    import io

    import duckdb
    from feast import FileSource
    from feast.utils import _convert_arrow_to_proto

    if chunk <= timedelta(0) or batch_rows < 1:
        raise ValueError("materialize_chunked: chunk must be positive and batch_rows >= 1")
    repo_path = Path(repo_path).resolve()
    fs = store(repo_path, env)
    # plain datetimes in UTC: Airflow hands pendulum DateTimes, whose arithmetic and comparisons differ
    start, end = (pd.Timestamp(_utc(t)).tz_convert("UTC").to_pydatetime() for t in (start, end))
    provider = fs._get_provider()
    written: dict[str, int] = {}
    fallback: list[str] = []
    con = duckdb.connect(config={"memory_limit": memory_limit})
    con.execute("SET TimeZone = 'UTC'")
    try:
        for fv in fs.list_feature_views():
            if not fv.online:
                continue
            src = fv.batch_source
            keys = [c.name for c in fv.entity_columns]
            if not isinstance(src, FileSource) or src.field_mapping or not keys or src.created_timestamp_column:
                fallback.append(fv.name)
                continue
            path = Path(src.path) if Path(src.path).is_absolute() else repo_path / src.path
            ts = src.timestamp_field
            # the timestamp as TIMESTAMPTZ (UTC session): naive, ns or us columns all compare with the bounds
            cols = ", ".join([*(_q(c) for c in dict.fromkeys([*keys, *[f.name for f in fv.features]]) if c != ts),
                              f"CAST({_q(ts)} AS TIMESTAMPTZ) AS {_q(ts)}"])
            by = ", ".join(_q(k) for k in keys)
            key_types = {c.name: c.dtype.to_value_type() for c in fv.entity_columns}
            written[fv.name] = 0
            lo = start
            while True:
                hi = min(lo + chunk, end)
                last = hi >= end   # Feast's file store is inclusive at both ends; inner windows are [lo, hi)
                sql = (f"SELECT * FROM (SELECT {cols} FROM read_parquet(?)) "
                       f"WHERE {_q(ts)} >= ?::TIMESTAMPTZ AND {_q(ts)} {'<=' if last else '<'} ?::TIMESTAMPTZ "
                       f"QUALIFY row_number() OVER (PARTITION BY {by} ORDER BY {_q(ts)} DESC) = 1")
                reader = con.execute(sql, [str(path), lo, hi]).to_arrow_reader(batch_rows)
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    rows = _convert_arrow_to_proto(batch, fv, key_types)
                    provider.online_write_batch(fs.config, fv, rows, progress=None)
                    written[fv.name] += batch.num_rows
                    if on_batch is not None:
                        on_batch(fv.name, batch.num_rows)
                    del rows
                if last:
                    break
                lo = hi
            fs.registry.apply_materialization(fv, fs.project, start, end)
    finally:
        con.close()
    if fallback:
        with contextlib.redirect_stdout(io.StringIO()):
            fs.materialize(start_date=start, end_date=end, feature_views=fallback)
    precompute = getattr(fs, "_precompute_affected_services", None)   # Feast >= 0.6x: precomputed services
    if precompute is not None and written:
        precompute(list(written))
    return written


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------------------
# offline: point-in-time training sets
# ---------------------------------------------------------------------------------------------------------


def _service_views(fs: FeatureStore, service: str) -> tuple[Any, list[tuple[str, list[str], list[str]]], set[str]]:
    """(FeatureService, [(view, its join keys, its bare feature names)] in service order, string features)."""
    from feast.types import String

    fsvc = fs.get_feature_service(service)
    views: list[tuple[str, list[str], list[str]]] = []
    strings: set[str] = set()
    for proj in fsvc.feature_view_projections:
        fv = fs.get_feature_view(proj.name)
        keys = [proj.join_key_map.get(k, k) for k in fv.join_keys]
        views.append((proj.name_to_use(), keys, [f.name for f in proj.features]))
        strings |= {f.name for f in proj.features if f.dtype == String}
    return fsvc, views, strings


def _candidate_bounds(fs: FeatureStore, repo_path: Path, view: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Where the candidate rows of ``view``'s point-in-time join can change, as int64 UTC nanoseconds:
    (``starts``: a source row becomes a candidate for entity time ``t >= start``: its event and created
    timestamps; ``ends``: it stops being one for ``t > end``: event timestamp + ttl). None when the source is not a
    plain Parquet ``FileSource`` (then every entity timestamp is its own class)."""
    import duckdb
    from feast import FileSource

    try:
        fv = fs.get_feature_view(view)
    except Exception:  # noqa: BLE001 - an aliased projection or another view kind: no classes, the exact slow path
        return None
    src = fv.batch_source
    if not isinstance(src, FileSource) or src.field_mapping:
        return None
    path = Path(src.path) if Path(src.path).is_absolute() else repo_path / src.path
    ts_cols = [c for c in (src.timestamp_field, src.created_timestamp_column) if c]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        # epoch_ns of TIMESTAMPTZ: naive columns read as UTC, as Feast's file store does
        sel = " UNION ".join(f"SELECT DISTINCT epoch_ns(CAST({_q(c)} AS TIMESTAMPTZ)) AS t, {i} AS kind "
                             f"FROM read_parquet(?) WHERE {_q(c)} IS NOT NULL" for i, c in enumerate(ts_cols))
        got = con.execute(sel, [str(path)] * len(ts_cols)).fetchnumpy()
    finally:
        con.close()
    t, kind = np.asarray(got["t"], dtype=np.int64), np.asarray(got["kind"])
    ttl_ns = pd.Timedelta(fv.ttl).value if fv.ttl else 0       # Feast: no ttl (or 0) means no lower bound
    ends = np.unique(t[kind == 0] + ttl_ns) if ttl_ns else np.zeros(0, np.int64)
    return np.unique(t), ends


def _time_classes(ts_ns: np.ndarray, bounds: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """One id per entity timestamp such that two timestamps with the same id have the same candidate rows (for
    every key): the same number of row starts ``<= t`` and of row ends ``< t``. Without bounds: the timestamp."""
    if bounds is None:
        return ts_ns
    starts, ends = bounds
    return (np.searchsorted(starts, ts_ns, side="right").astype(np.int64) * (len(ends) + 1)
            + np.searchsorted(ends, ts_ns, side="left"))


def historical_features(
    repo_path: Path, env: Mapping[str, str], entity_df: pd.DataFrame, service: str,
    views: Collection[str] | None = None,
) -> pd.DataFrame:
    """Point-in-time join of a feature service onto ``entity_df`` (join keys + ``event_timestamp`` + labels).

    For each row, every view of the service contributes its latest feature row with
    ``row's event_timestamp - ttl <= feature event_timestamp <= row's event_timestamp`` (never a later one).
    Returns ``entity_df`` unchanged (same rows, order, index and columns) plus one column per feature under its
    bare name; missing features are NaN (numeric) or None (string). Naive timestamps are taken as UTC.
    ``views``: only these views of the service (only their join keys are needed), e.g. the bandit's strategy
    stats for one strategy at every decision's time.
    """
    repo_path = Path(repo_path).resolve()
    fs = store(repo_path, env)
    _, views_of_service, strings = _service_views(fs, service)
    if views is None:
        joined = views_of_service
    else:
        unknown = sorted(set(views) - {v for v, _, _ in views_of_service})
        if unknown:
            raise ValueError(f"feature service {service!r} has no views {unknown}")
        joined = [v for v in views_of_service if v[0] in set(views)]
    keys = list(dict.fromkeys(k for _, view_keys, _ in joined for k in view_keys))
    absent = [k for k in [*keys, "event_timestamp"] if k not in entity_df.columns]
    if absent:
        raise KeyError(f"entity_df lacks {absent} needed by feature service {service!r}")
    names = [n for _, _, feats in joined for n in feats]
    clash = [n for n in names if n in entity_df.columns]
    if clash:
        raise ValueError(f"entity_df already has feature columns {clash}")

    ts = pd.to_datetime(entity_df["event_timestamp"])
    naive_utc = ts if ts.dt.tz is None else ts.dt.tz_convert("UTC").dt.tz_localize(None)
    ts_us = naive_utc.to_numpy().astype("datetime64[us]")
    ts_ns = ts_us.astype("datetime64[ns]").view(np.int64)
    key_cols = {k: entity_df[k].to_numpy() for k in keys}
    values: dict[str, np.ndarray] = {}

    # Trap: Feast's file (dask) offline store, given a whole service, (1) drops an entity row from ALL views
    # once one view has only out-of-window rows for it, and (2) deduplicates entity rows on the join keys of
    # the views joined so far, collapsing e.g. two items of one (query, timestamp). So join one view at a time
    # and broadcast its answers back onto the caller's rows.
    # Feed Feast less: two entity timestamps between the same consecutive source timestamps (and the same
    # timestamps + ttl) have the same candidate rows for every key, hence the same answer. So Feast joins one
    # representative row (a real entity timestamp) per (keys, such time class): a day of daily stats rows is a
    # few classes, not one join row per request (bandit: 6 strategies x every decision -> 6 x a few rows).
    for view, view_keys, feats in joined:
        if len(entity_df) == 0:
            for n in feats:
                values[n] = np.full(0, None, dtype=object)
            continue
        group = pd.DataFrame({**{k: key_cols[k] for k in view_keys},
                              "_class": _time_classes(ts_ns, _candidate_bounds(fs, repo_path, view))})
        gid = group.groupby(list(group.columns), sort=False, dropna=False).ngroup().to_numpy()
        first = np.unique(gid, return_index=True)[1]          # one representative row per group, by group id
        distinct = pd.DataFrame({k: key_cols[k][first] for k in view_keys})
        distinct["event_timestamp"] = pd.Series(ts_us[first]).dt.tz_localize("UTC")
        got = fs.get_historical_features(
            entity_df=distinct, features=[f"{view}:{f}" for f in feats], full_feature_names=False
        ).to_df()
        on = [*view_keys, "event_timestamp"]
        got["event_timestamp"] = pd.to_datetime(got["event_timestamp"], utc=True).astype(
            distinct["event_timestamp"].dtype)
        got = got[[*on, *feats]].drop_duplicates(on, keep="last")
        answers = distinct.merge(got, on=on, how="left", validate="one_to_one")
        for n in feats:
            values[n] = answers[n].to_numpy()[gid]

    out = entity_df.copy()
    for n in names:
        col = values[n]
        if n in strings:
            out[n] = pd.Series(col, index=out.index, dtype="object").where(pd.notna(col), None)
        else:
            out[n] = pd.to_numeric(pd.Series(col, index=out.index), errors="coerce").astype("float64")
    return out


# ---------------------------------------------------------------------------------------------------------
# online
# ---------------------------------------------------------------------------------------------------------


class OnlineFeatures:
    """Online lookups, opened once (scorer start) and reused per request.

    ``get(service, entity_rows)`` returns one dict per entity row, feature name -> value (None when the online
    store has no value for that entity, or it was never materialized).
    """

    def __init__(self, repo_path: Path, env: Mapping[str, str], *, direct: bool = True) -> None:
        """``direct``: read a SQLite online store with :class:`SqliteOnlineReader`, a Redis one with
        ``ml.online_redis.RedisOnlineReader`` (same answers as the SDK, see there); any other online store, or
        ``direct=False``, goes through ``FeatureStore.get_online_features``."""
        from ml.online_redis import RedisOnlineReader

        self._store = store(Path(repo_path).resolve(), env)
        self._services: dict[str, tuple[Any, list[str]]] = {}
        self._direct: DirectOnlineReader[Any] | None = None
        self._reader = "feast-sdk"
        if direct and SqliteOnlineReader.supports(self._store):
            self._direct, self._reader = SqliteOnlineReader(self._store), "sqlite-direct"
        elif direct and RedisOnlineReader.supports(self._store):
            self._direct, self._reader = RedisOnlineReader(self._store), "redis-direct"

    @property
    def reader(self) -> str:
        """Which path serves lookups: ``sqlite-direct``, ``redis-direct`` or ``feast-sdk``."""
        return self._reader

    def _service(self, service: str) -> tuple[Any, list[str]]:
        if service not in self._services:
            fsvc, views, _ = _service_views(self._store, service)
            self._services[service] = (fsvc, [n for _, _, feats in views for n in feats])
        return self._services[service]

    def get(self, service: str, entity_rows: list[dict]) -> list[dict]:
        if not entity_rows:
            return []
        if self._direct is not None:
            return self._direct.get(service, entity_rows)
        return self.get_sdk(service, entity_rows)

    def get_columns(self, service: str, entity_rows: list[dict]) -> dict[str, Sequence]:
        """``get`` by column: every feature of the service -> its values over ``entity_rows`` (None where absent)."""
        if self._direct is not None:
            return self._direct.get_columns(service, entity_rows)
        fsvc, names = self._service(service)
        if not entity_rows:
            return {n: () for n in names}
        cols = self._store.get_online_features(features=fsvc, entity_rows=entity_rows).to_dict()
        return {n: cols[n] for n in names}

    def get_sdk(self, service: str, entity_rows: list[dict]) -> list[dict]:
        """The Feast SDK's answer (``get_online_features``), whatever the reader: the reference for tests."""
        if not entity_rows:
            return []
        fsvc, names = self._service(service)
        cols = self._store.get_online_features(features=fsvc, entity_rows=entity_rows).to_dict()
        return [{n: cols[n][i] for n in names} for i in range(len(entity_rows))]

    def refresh(self) -> None:
        """Re-read the registry (after a new apply) and forget cached services."""
        self._store.refresh_registry()
        self._services.clear()
        if self._direct is not None:
            self._direct.clear()


_SqlitePlan = list[tuple[str, EntityColumns, list[str]]]   # per view: (quoted table, entity columns, features)


class SqliteOnlineReader(DirectOnlineReader[_SqlitePlan]):
    """``get_online_features`` for Feast's SQLite online store, read straight from its tables.

    Why bypass the SDK: profiled in the scorer, ``FeatureStore.get_online_features`` spends ~20 ms on 100 items
    (2 shared cores) in per-call planning, entity dedup, proto-to-Python conversion and response assembly; the
    store's own read is one indexed SELECT per view. This reader does exactly what the SDK's sqlite path does
    (``SqliteOnlineStore.online_read``: ``SELECT entity_key, feature_name, value FROM <project>_<view> WHERE
    entity_key IN (...)``, keys from Feast's own ``serialize_entity_key``, values parsed as ``ValueProto``),
    with the plan per feature service built once, serialized keys cached, and one read-only connection per
    thread (plans, keys and value decoding are shared with the Redis reader, ``ml.online_common``). Like the
    SDK's non-precomputed path it applies no TTL (a materialized value is returned however old).

    Decoded rows are cached per (view, entity), and the service's whole answer per entity row (its entity values),
    and both are dropped whenever SQLite's ``PRAGMA data_version`` (checked on every call) says another connection
    committed to the store (a materialization): answers stay exactly the store's, and a repeated entity row (the
    same query and items for many requests) costs a dict lookup instead of a read and a decode per view.
    Equivalence with ``get_online_features`` is tested on a materialized store (tests/serving/test_online_direct.py);
    ``OnlineFeatures(direct=False)`` switches back to the SDK.
    """

    _ROW_CACHE_MAX = 200_000
    MMAP_BYTES = 1 << 30      # address space, not memory: the pages are the OS page cache's
    _PRESENT_MAX_ROWS = 20_000_000   # a compound-key table larger than this gets no key set (~4M keys, ~0.5 GB)

    def __init__(self, fs: FeatureStore) -> None:
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        super().__init__(fs)
        self._db = SqliteOnlineStore._get_db_path(fs.config)
        self._local = threading.local()
        # (table, feature names) -> entity key -> the view's values (those names' order, None where absent): one
        # dict per view, so a lookup hashes the entity key only
        self._rows: dict[tuple[str, tuple[str, ...]], dict[bytes, tuple]] = {}
        self._n_rows = 0
        # table of a compound-key view (query x item) -> every entity key it holds: most of a request's pairs were
        # never seen, and a set answers "absent" without an index probe each (dropped with the row cache)
        self._present: dict[str, frozenset[bytes]] = {}
        self._present_loading: set[str] = set()      # tables whose key set a helper thread is reading
        self._present_threads: list[threading.Thread] = []
        # service -> entity-row values (the service's entity columns, in plan order) -> the row's values, in the
        # service's order (its views' names, in plan order)
        self._service_cache: dict[str, dict[tuple, tuple]] = {}
        self._generation = 0
        self._cache_lock = threading.Lock()

    @staticmethod
    def supports(fs: FeatureStore) -> bool:
        t = str(getattr(fs.config.online_store, "type", ""))
        versioned = getattr(fs.config.registry, "enable_online_feature_view_versioning", False)
        return (t == "sqlite" or t.endswith("SqliteOnlineStore")) and not versioned

    def clear(self) -> None:
        """Forget plans, keys and rows (after the registry changed)."""
        super().clear()
        self._drop_rows()

    def _drop_rows(self) -> None:
        """Forget every cached row, per view and per service, and start a new generation."""
        with self._cache_lock:
            self._rows.clear()
            self._n_rows = 0
            self._present.clear()
            self._present_loading.clear()
            self._service_cache.clear()
            self._generation += 1

    def _fresh(self, conn) -> int:
        """Drop the row cache if the store changed since this thread last looked; the cache generation to fill.

        A thread's first look clears too: its connection has no earlier ``data_version`` to compare with, and rows
        cached by other threads may predate a commit it cannot see.
        """
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if getattr(self._local, "data_version", None) != version:
            self._local.data_version = version
            self._drop_rows()
        return self._generation

    def _conn(self):
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _connect(self):
        import sqlite3

        # read-only: the scorer never writes the online store; materialization (another process) does.
        conn = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True)
        # Pages through a memory map instead of SQLite's 2 MB page cache plus a read() per page miss: the store is
        # tens of MB, and a request's (query, item) pairs land on pages all over it (measured: 0.8 -> 0.55 ms for
        # the ~280 keys of a 500-candidate request). Linux maps the same page cache a writer updates.
        conn.execute(f"PRAGMA mmap_size={self.MMAP_BYTES}")
        return conn

    def _build_plan(self, service: str) -> _SqlitePlan:
        """Per view of the service: (quoted table, [(join key, entity-row column, value type)], feature names)."""
        from feast.infra.online_stores.helpers import compute_table_id

        return [('"' + compute_table_id(self._fs.project, fv).replace('"', '""') + '"', keys,
                 [f.name for f in proj.features])
                for proj, fv, keys in self._views(service)]

    def _encode_key(self, entity_key: EntityKey) -> bytes:
        """Feast's serialized entity key, the ``entity_key`` column of the view's table."""
        from feast.infra.key_encoding_utils import serialize_entity_key

        return serialize_entity_key(entity_key, entity_key_serialization_version=self._version)

    def _answer(self, service: str, entity_rows: list[dict]) -> tuple[list[str], list[tuple]]:
        """The service's feature names, and each entity row's values in that order (None where the store has none).

        A row's values are the service's cached answer for its entity values (:meth:`_service_rows`); the rows
        not cached yet are read view by view (:meth:`_read`) and cached, both in the store's current generation.
        """
        conn = self._conn()
        generation = self._fresh(conn)
        plan = self._plan(service)
        values = self._entity_ids(service, (keys for _, keys, _ in plan), entity_rows)
        cached = self._service_rows(service)
        found = [cached.get(v) for v in values]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            read = self._read(conn, service, plan, generation, [entity_rows[i] for i in missing])
            with self._cache_lock:
                store = self._generation == generation   # not if the store changed while we read
                if store and len(cached) + len(missing) > self._ROW_CACHE_MAX:
                    cached.clear()
                for i, row in zip(missing, read):
                    found[i] = row
                    if store:
                        cached[values[i]] = row
        return [n for _, _, names in plan for n in names], found  # type: ignore[return-value]

    def _service_rows(self, service: str) -> dict[tuple, tuple]:
        """The service's answers cached by entity values (dropped with the row cache)."""
        cached = self._service_cache.get(service)
        if cached is None:
            cached = self._service_cache.setdefault(service, {})
        return cached

    def _read(self, conn, service: str, plan: _SqlitePlan, generation: int, entity_rows: list[dict]) -> list[tuple]:
        """The values of ``entity_rows`` (the plan's views' names, in order) read view by view, through the
        per-view row cache."""
        columns: list[list[tuple]] = []
        for table, keys, names in plan:
            row_keys = self._storage_keys(keys, self._entity_values(service, keys, entity_rows))
            view = (table, tuple(names))
            cache = self._rows.get(view) or {}
            got = [cache.get(ek) for ek in row_keys]
            missing = list(dict.fromkeys(ek for ek, v in zip(row_keys, got) if v is None))
            if missing:
                to_read = missing
                present = self._keys_present(table, generation) if len(keys) > 1 else None
                if present is not None:   # a compound key (query x item): most of a request's pairs were never stored
                    to_read = [ek for ek in missing if ek in present]
                fetched = self._select(conn, table, names, to_read) if to_read else {}
                self._keep_rows(view, fetched, generation)
                absent = (None,) * len(names)
                got = [v if v is not None else fetched.get(ek, absent) for ek, v in zip(row_keys, got)]
            columns.append(got)  # type: ignore[arg-type]
        return join_views(columns)

    def _keep_rows(self, view: tuple[str, tuple[str, ...]], rows: dict[bytes, tuple], generation: int) -> None:
        """Cache rows just read, unless the store changed while they were read."""
        if not rows:
            return
        with self._cache_lock:
            if self._generation == generation:
                if self._n_rows + len(rows) > self._ROW_CACHE_MAX:
                    self._rows.clear()
                    self._n_rows = 0
                self._rows.setdefault(view, {}).update(rows)
                self._n_rows += len(rows)

    def _keys_present(self, table: str, generation: int) -> frozenset[bytes] | None:
        """Every entity key ``table`` holds, or None while that set is being read (then the caller probes).

        Read once per store generation on a helper thread with its own connection (one scan of the table's key
        index: ~40 ms for 26k keys here, too long to stall the request that finds the set missing), not at all
        for a table of more than ``_PRESENT_MAX_ROWS`` rows (the set would cost too much memory)."""
        present = self._present.get(table)
        if present is not None:
            return present
        with self._cache_lock:
            if table in self._present_loading:
                return None
            self._present_loading.add(table)
        thread = threading.Thread(target=self._load_present, args=(table, generation), daemon=True,
                                  name=f"online-keys-{table}")
        self._present_threads = [t for t in self._present_threads if t.is_alive()] + [thread]
        thread.start()
        return None

    def _load_present(self, table: str, generation: int) -> None:
        try:
            conn = self._connect()    # this helper thread's own
            try:
                (rows,) = conn.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()
                if (rows or 0) > self._PRESENT_MAX_ROWS:
                    log.info("online reader: %s has ~%d rows; probing it per key, no key set", table, rows)
                    return       # stays "loading" for this generation: no second attempt until the store changes
                present = frozenset(ek for (ek,) in conn.execute(f"SELECT DISTINCT entity_key FROM {table}"))
            finally:
                conn.close()
            with self._cache_lock:
                if self._generation == generation:   # not if the store changed while we read
                    self._present[table] = present
                    self._present_loading.discard(table)
        except Exception:  # the set is an optimization: without it, every key is probed
            log.exception("online reader: reading the keys of %s failed; probing it per key", table)

    def wait_background(self, timeout: float | None = 10.0) -> None:
        """Wait for the key-set reads started so far (tests)."""
        for thread in list(self._present_threads):
            thread.join(timeout)
        self._present_threads = [t for t in self._present_threads if t.is_alive()]

    def _select(self, conn, table: str, names: list[str], entity_keys: list[bytes]) -> dict[bytes, tuple]:
        """Each entity key's values of ``names`` (in that order) from the view's table, None where absent (an
        entity the table does not have: one shared tuple of Nones)."""
        at = {n: j for j, n in enumerate(names)}
        absent = (None,) * len(names)
        out: dict[bytes, tuple] = {}
        for start in range(0, len(entity_keys), 900):    # SQLite's default limit on bound parameters
            chunk = entity_keys[start:start + 900]
            found: dict[bytes, list] = {}
            cur = conn.execute(f"SELECT entity_key, feature_name, value FROM {table} "
                               f"WHERE entity_key IN ({','.join('?' * len(chunk))})", chunk)
            for ek, name, blob in cur:
                j = at.get(name)
                if j is not None:
                    row = found.get(ek)
                    if row is None:
                        row = found[ek] = [None] * len(names)
                    row[j] = self._value(blob)
            for ek in chunk:
                row = found.get(ek)
                out[ek] = tuple(row) if row is not None else absent
        return out
