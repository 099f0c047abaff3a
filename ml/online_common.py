"""What the direct online readers share: Feast's entity keys, cached, and ``ValueProto`` decoding.

:class:`DirectOnlineReader` is the base of ``ml.feature_store.SqliteOnlineReader`` and
``ml.online_redis.RedisOnlineReader``. Each reads one Feast online store straight from its storage and returns
exactly what ``FeatureStore.get_online_features`` would; what differs is only how an entity key becomes a storage
key (:meth:`DirectOnlineReader._encode_key`) and how a service's plan is built and read.
"""

from __future__ import annotations

import operator
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:  # feast is heavy to import; the readers load it when built
    from feast import FeatureStore, FeatureView
    from feast.feature_view_projection import FeatureViewProjection
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey

EntityColumns = list[tuple[str, str, Any]]   # (join key, entity-row column, Feast value type), in join-key order
PlanT = TypeVar("PlanT")

_unpack_double = struct.Struct("<d").unpack_from
_pack_u32 = struct.Struct("<I").pack
_pack_i64 = struct.Struct("<q").pack
_SCALARS = frozenset({"double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val", "bytes_val"})


_STRING_T, _INT64_T = 2, 4        # feast.value_type.ValueType.STRING / INT64 (checked in _key_layout)
_STRING_PART = _pack_u32(_STRING_T)
_INT64_PART = _pack_u32(_INT64_T) + _pack_u32(8)


def _key_layout(keys: EntityColumns, version: int) -> tuple[bytes, list[tuple[int, bool]]] | bool:
    """For ``DirectOnlineReader._fast_keys``: the serialized key's head (number of join keys, then per join key in
    sorted order its type, length and UTF-8 name) and, in that order, (index in ``keys``, is STRING); False when a
    join key is neither STRING nor INT64, or the serialization version is not 3."""
    from feast.value_type import ValueType

    if version < 3 or (ValueType.STRING.value, ValueType.INT64.value) != (_STRING_T, _INT64_T):
        return False
    order = sorted(range(len(keys)), key=lambda j: keys[j][0])
    head = _pack_u32(len(keys)) + b"".join(
        _pack_u32(_STRING_T) + _pack_u32(len(name := keys[j][0].encode("utf8"))) + name for j in order)
    kinds = []
    for j in order:
        vt = keys[j][2]
        if vt not in (ValueType.STRING, ValueType.INT64):
            return False
        kinds.append((j, vt == ValueType.STRING))
    return head, kinds


def join_views(columns: list[list[tuple]]) -> list[tuple]:
    """Per entity row, its views' (or hash groups') value tuples concatenated in plan order: ``columns[v][i]`` is
    row i's values from view v."""
    if len(columns) == 1:
        return columns[0]
    return [sum(parts, ()) for parts in zip(*columns)]


def tuple_getter(columns: list[str]) -> Callable[[dict], tuple]:
    """A function giving a dict's values of ``columns`` as a tuple (of one value, or none, too)."""
    if len(columns) > 1:
        return operator.itemgetter(*columns)
    if columns:
        only = columns[0]
        return lambda row: (row[only],)
    return lambda row: ()


class DirectOnlineReader(ABC, Generic[PlanT]):
    """Plans per feature service, storage keys per entity (both cached), values decoded as the SDK decodes them.

    Subclasses build a service's plan (:meth:`_build_plan`) and turn Feast's ``EntityKey`` into their storage
    key (:meth:`_encode_key`).
    """

    _KEY_CACHE_MAX = 200_000

    def __init__(self, fs: FeatureStore) -> None:
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        self._value_proto = Value
        self._to_python = feast_value_type_to_python_type
        self._fs = fs
        self._version = fs.config.entity_key_serialization_version
        self._plans: dict[str, PlanT] = {}
        self._keys: dict[tuple[str, ...], dict[tuple, bytes]] = {}   # join keys -> entity values -> storage key
        self._pickers: dict[str, Callable[[dict], tuple]] = {}        # service -> its entity columns' getter
        self._layouts: dict[tuple, Any] = {}      # entity columns -> _key_layout (False: no fast keys)
        self._parts: dict[tuple[bool, type, Any], bytes] = {}   # (is STRING, type, value) -> its part of a key

    def clear(self) -> None:
        """Forget plans, keys and entity-column getters (after the registry changed)."""
        self._plans.clear()
        self._keys.clear()
        self._pickers.clear()
        self._layouts.clear()
        self._parts.clear()

    def _entity_ids(self, service: str, views: Iterator[EntityColumns], entity_rows: list[dict]) -> list[tuple]:
        """Each row's values of every entity-row column the service's views read (``views``: their entity
        columns, consumed only the first time), in that order: the key of a row's cached answer."""
        pick = self._pickers.get(service)
        if pick is None:
            pick = self._pickers[service] = tuple_getter(
                list(dict.fromkeys(col for keys in views for _, col, _ in keys)))
        try:
            return [pick(row) for row in entity_rows]
        except KeyError as exc:
            raise KeyError(f"entity row lacks join key {exc} needed by feature service {service!r}") from None

    @abstractmethod
    def _build_plan(self, service: str) -> PlanT:
        """How :meth:`get` reads ``service``; built once per service until :meth:`clear`."""

    @abstractmethod
    def _encode_key(self, entity_key: EntityKey) -> bytes:
        """The store's key for one Feast entity key."""

    @abstractmethod
    def _answer(self, service: str, entity_rows: list[dict]) -> tuple[list[str], list[tuple]]:
        """The service's feature names, and each entity row's values in that order (None where the store has
        none). The tuples may be shared with the reader's caches (they are immutable)."""

    def get(self, service: str, entity_rows: list[dict]) -> list[dict]:
        """One dict per entity row: every feature of the service -> value, None where the store has none."""
        names, values = self._answer(service, entity_rows)
        return [dict(zip(names, v)) for v in values]

    def get_columns(self, service: str, entity_rows: list[dict]) -> dict[str, tuple]:
        """``get`` by column: every feature of the service -> its values over ``entity_rows`` (in order).

        Why: the scorer turns the ranker's lookups into one array per feature; a dict per candidate that it then
        takes apart again was ~10% of a request at 500 candidates. One C-level transpose here instead.
        """
        names, values = self._answer(service, entity_rows)
        if not values:
            return {n: () for n in names}
        return dict(zip(names, zip(*values)))

    def _plan(self, service: str) -> PlanT:
        plan = self._plans.get(service)
        if plan is None:
            plan = self._plans[service] = self._build_plan(service)
        return plan

    def _views(self, service: str) -> Iterator[tuple[FeatureViewProjection, FeatureView, EntityColumns]]:
        """Each view of the service, with its entity columns (join keys mapped by the projection, typed)."""
        for proj in self._fs.get_feature_service(service).feature_view_projections:
            fv = self._fs.get_feature_view(proj.name)
            dtypes = {c.name: c.dtype.to_value_type() for c in fv.entity_columns}
            yield proj, fv, [(k, proj.join_key_map.get(k, k), dtypes[k]) for k in fv.join_keys]

    @staticmethod
    def _entity_values(service: str, keys: EntityColumns, entity_rows: list[dict]) -> list[tuple]:
        """Each row's join-key values, as a tuple in ``keys`` order."""
        cols = [col for _, col, _ in keys]
        try:
            if len(cols) == 1:
                c0 = cols[0]
                return [(row[c0],) for row in entity_rows]
            pick = operator.itemgetter(*cols)
            return [pick(row) for row in entity_rows]
        except KeyError as exc:
            raise KeyError(f"entity row lacks join key {exc} needed by feature service {service!r}") from None

    def _storage_keys(self, keys: EntityColumns, values: list[tuple]) -> list[bytes]:
        """The storage key of every ``values`` tuple (cached per entity, or built from cached value parts for a
        compound key; misses converted in one batch per join key)."""
        if len(keys) > 1:
            # A pair (query, item) rarely repeats across requests: build its key from the cached parts of its values
            # (``_fast_keys``) rather than keep every pair's key.
            fast = self._fast_keys(keys, values)
            if fast is not None:
                return fast
        names = tuple(k for k, _, _ in keys)
        cache = self._keys.get(names)
        if cache is None:
            cache = self._keys[names] = {}
        blobs = [cache.get(v) for v in values]
        missing = list(dict.fromkeys(v for v, b in zip(values, blobs) if b is None))
        if not missing:
            return blobs  # type: ignore[return-value]
        if len(cache) + len(missing) > self._KEY_CACHE_MAX:
            cache.clear()
        fast = self._fast_keys(keys, missing)
        if fast is not None:
            cache.update(zip(missing, fast))
            return [b if b is not None else cache[v] for v, b in zip(values, blobs)]
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        # One conversion per join key for all misses (the SDK converts entity columns the same way, column-wise).
        protos = [python_values_to_proto_values([v[j] for v in missing], vt) for j, (_, _, vt) in enumerate(keys)]
        for m, v in enumerate(missing):
            cache[v] = self._encode_key(EntityKey(join_keys=list(names), entity_values=[p[m] for p in protos]))
        return [b if b is not None else cache[v] for v, b in zip(values, blobs)]

    def _from_serialized(self, serialized: bytes) -> bytes:
        """The storage key of a serialized entity key (``serialize_entity_key``'s bytes); the SQLite store keys by
        those bytes as they are, Redis appends the project."""
        return serialized

    def _fast_keys(self, keys: EntityColumns, missing: list[tuple]) -> list[bytes] | None:
        """Storage keys of ``missing`` built straight as Feast's ``serialize_entity_key`` (version 3) lays them out,
        for join keys of type STRING (Python str values) or INT64 (Python int values); None for anything else,
        which takes the SDK's conversion.

        Why by hand: a new (query, item) pair is a key miss for every view of the ranker's service, and through
        the protos (``python_values_to_proto_values``, ``EntityKey``, ``serialize_entity_key``) each costs tens of
        microseconds: exploration's random items made that ~10% of a request. The layout: number of join keys
        (u32), then per join key in sorted order its type (STRING, u32), length (u32) and UTF-8 name, then per
        value its type (u32), length (u32) and bytes (UTF-8, or int64 little-endian). Byte-identical to Feast's
        (tests/serving/test_online_direct.py checks it against ``serialize_entity_key``).
        """
        layout = self._layouts.get(tuple(keys))
        if layout is None:
            layout = self._layouts[tuple(keys)] = _key_layout(keys, self._version)
        if layout is False:
            return None
        head, kinds = layout
        # each value's encoded part, kept (a request's query is in every pair; an item in many requests' pairs)
        parts = self._parts
        if len(parts) > self._KEY_CACHE_MAX:
            parts.clear()
        out = []
        for values in missing:
            buf = [head]
            for j, is_str in kinds:
                v = values[j]
                # keyed by the join key's kind and the value's type too: True == 1, but a bool is not an INT64,
                # and an int given for a STRING join key is the SDK's to convert (or refuse)
                part = parts.get((is_str, type(v), v))
                if part is None:
                    if type(v) is not (str if is_str else int):
                        return None
                    part = parts[(is_str, type(v), v)] = (_STRING_PART + _pack_u32(len(b := v.encode("utf8"))) + b if is_str
                                                 else _INT64_PART + _pack_i64(v))
                buf.append(part)
            out.append(self._from_serialized(b"".join(buf)))
        return out

    def _value(self, blob: bytes | None) -> Any:
        """A stored ``ValueProto`` as the SDK returns it; None for an absent or empty value."""
        if not blob:    # absent field or hash: Feast parses nothing into an empty Value, i.e. None
            return None
        # Fast path for the common case, a Value holding only double_val: protobuf's encoding of that is fixed,
        # tag byte 0x29 (field 5, 64-bit wire type) then the IEEE double little-endian. Anything else: parse.
        if len(blob) == 9 and blob[0] == 0x29:
            return _unpack_double(blob, 1)[0]
        v = self._value_proto()
        v.ParseFromString(blob)
        kind = v.WhichOneof("val")
        if kind is None or kind == "null_val":
            return None
        return getattr(v, kind) if kind in _SCALARS else self._to_python(v)
