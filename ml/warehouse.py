"""The PostgreSQL warehouse of the production profile: raw Parquet in, marts (as Parquet) out.

dbt-postgres cannot read Parquet, so before each build ``load_raw`` mirrors the raw partitions into tables of
schema ``raw`` (the contract's columns plus ``dt``), one partition at a time: a partition whose files
changed (names, sizes, mtimes: its fingerprint) is deleted and re-copied in one transaction, an unchanged one
is skipped, a removed one is deleted. So reloading is idempotent and costs only what changed, and the
Postgres tables always equal the files. After the build, ``export_marts`` writes each mart table to
``{marts_dir}/<mart>.parquet`` (atomic rename), so validation, Feast and the trainers read the very same
files as under the embedded profile: same code, only the warehouse differs.

Every function takes its connection parameters (``PgParams``); ``ml.pipeline`` binds them from Settings.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ml.events.schema import SCHEMAS, TABLES

RAW_SCHEMA = "raw"
_LEDGER = "_ltrr_loaded_partitions"


@dataclass(frozen=True)
class PgParams:
    """Where the warehouse lives. ``password`` comes from the environment (LTRR_PG_DSN), never a file."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = ""
    dbname: str = "ltrr_warehouse"

    def connect(self, **kw):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password or None,
                               dbname=self.dbname, connect_timeout=10, **kw)

    def dbt_env(self, schema: str) -> dict[str, str]:
        """The LTRR_PG_* variables dbt_project/profiles.yml reads for its postgres target."""
        return {"LTRR_PG_HOST": self.host, "LTRR_PG_PORT": str(self.port), "LTRR_PG_USER": self.user,
                "LTRR_PG_PASSWORD": self.password, "LTRR_PG_DBNAME": self.dbname, "LTRR_PG_SCHEMA": schema}


@dataclass
class LoadResult:
    loaded: dict[str, list[str]] = field(default_factory=dict)   # table -> partitions (re)loaded
    deleted: dict[str, list[str]] = field(default_factory=dict)  # table -> partitions gone from disk
    rows: dict[str, int] = field(default_factory=dict)           # table -> rows copied this time
    unchanged: int = 0


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_float64(t):
        return "double precision"
    if pa.types.is_int32(t):
        return "integer"
    if pa.types.is_int64(t):
        return "bigint"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_list(t):
        return _pg_type(t.value_type) + "[]"
    raise TypeError(f"no Postgres type for Arrow {t}")


def _ddl(table: str) -> str:
    cols = ", ".join(f'"{f.name}" {_pg_type(f.type)}' for f in SCHEMAS[table])
    return f'create table if not exists {RAW_SCHEMA}."{table}" ({cols}, dt date not null)'


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _array_literal(values) -> str | None:
    """A Python list -> Postgres array text ('{"a","b"}'); CSV has no list type."""
    if values is None:
        return None
    items = []
    for v in values:
        if v is None:
            items.append("NULL")
        else:
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{s}"')
    return "{" + ",".join(items) + "}"


def _csv_bytes(tbl: pa.Table) -> bytes:
    cols = []
    for name in tbl.column_names:
        col = tbl.column(name)
        if pa.types.is_list(col.type):
            col = pa.array([_array_literal(v) for v in col.to_pylist()], type=pa.string())
        cols.append(col)
    buf = io.BytesIO()
    # strings always quoted, nulls empty and unquoted: Postgres' CSV COPY reads '' as '' and nothing as NULL
    pacsv.write_csv(pa.table(cols, names=tbl.column_names), buf,
                    pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    return buf.getvalue()


def load_raw(raw_dir: Path, pg: PgParams, last_day: date | None = None) -> LoadResult:
    """Mirror ``{raw_dir}/<table>/dt=*/part-*.parquet`` (partitions up to ``last_day``) into ``raw.<table>``."""
    raw_dir = Path(raw_dir)
    out = LoadResult()
    with pg.connect() as conn:
        with conn.cursor() as cur:
            cur.execute(f"create schema if not exists {RAW_SCHEMA}")
            cur.execute(f"create table if not exists {RAW_SCHEMA}.{_LEDGER} "
                        "(tbl text not null, dt date not null, fingerprint text not null, rows bigint not null, "
                        "loaded_at timestamptz not null default now(), primary key (tbl, dt))")
            for table in TABLES:
                cur.execute(_ddl(table))
                cur.execute(f'create index if not exists "{table}_dt_idx" on {RAW_SCHEMA}."{table}" (dt)')
            conn.commit()
        for table in TABLES:
            with conn.cursor() as cur:
                cur.execute(f"select dt, fingerprint from {RAW_SCHEMA}.{_LEDGER} where tbl = %s", (table,))
                ledger = {d: fp for d, fp in cur.fetchall()}
            on_disk: dict[date, list[Path]] = {}
            root = raw_dir / table
            for d in sorted(root.glob("dt=*")) if root.exists() else []:
                day = date.fromisoformat(d.name[3:])
                files = sorted(d.glob("part-*.parquet"))
                if files and (last_day is None or day <= last_day):
                    on_disk[day] = files
            for day in sorted(set(ledger) - set(on_disk)):
                if last_day is not None and day > last_day:
                    continue
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(f'delete from {RAW_SCHEMA}."{table}" where dt = %s', (day,))
                    cur.execute(f"delete from {RAW_SCHEMA}.{_LEDGER} where tbl = %s and dt = %s", (table, day))
                out.deleted.setdefault(table, []).append(day.isoformat())
            for day, files in on_disk.items():
                fp = _fingerprint(files)
                if ledger.get(day) == fp:
                    out.unchanged += 1
                    continue
                tbl = pa.concat_tables([pq.read_table(f, schema=SCHEMAS[table]) for f in files])
                tbl = tbl.append_column("dt", pa.array([day] * tbl.num_rows, type=pa.date32()))
                cols = ", ".join(f'"{c}"' for c in tbl.column_names)
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(f'delete from {RAW_SCHEMA}."{table}" where dt = %s', (day,))
                    with cur.copy(f'copy {RAW_SCHEMA}."{table}" ({cols}) from stdin with (format csv)') as cp:
                        cp.write(_csv_bytes(tbl))
                    cur.execute(f"insert into {RAW_SCHEMA}.{_LEDGER} (tbl, dt, fingerprint, rows) "
                                "values (%s, %s, %s, %s) on conflict (tbl, dt) do update set "
                                "fingerprint = excluded.fingerprint, rows = excluded.rows, loaded_at = now()",
                                (table, day, fp, tbl.num_rows))
                out.loaded.setdefault(table, []).append(day.isoformat())
                out.rows[table] = out.rows.get(table, 0) + tbl.num_rows
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute(f'analyze {RAW_SCHEMA}."{table}"')
    return out


# Postgres type OID -> Arrow type, for the types the marts use.
_OID_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int32(), 23: pa.int32(), 25: pa.string(), 1043: pa.string(),
    700: pa.float64(), 701: pa.float64(), 1700: pa.float64(), 1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"), 1082: pa.date32(), 1009: pa.list_(pa.string()),
    1007: pa.list_(pa.int32()), 1016: pa.list_(pa.int64()), 1022: pa.list_(pa.float64()),
}


def export_marts(pg: PgParams, schema: str, marts: list[str], marts_dir: Path,
                 batch_rows: int = 100_000) -> dict[str, int]:
    """Write each ``schema.<mart>`` to ``{marts_dir}/<mart>.parquet`` (streamed in batches, atomic rename).

    numeric (Postgres' type for e.g. sum(bigint)) is written as float64, the type DuckDB gives the same SQL.
    """
    marts_dir = Path(marts_dir)
    marts_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with pg.connect() as conn:
        conn.execute("set time zone 'UTC'")
        for mart in marts:
            target = marts_dir / f"{mart}.parquet"
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            n = 0
            # a named (server-side) cursor streams the table instead of holding it all in memory
            with conn.transaction(), conn.cursor(name=f"export_{mart}") as cur:
                cur.execute(f'select * from "{schema}"."{mart}"')
                batch = cur.fetchmany(batch_rows)
                desc = cur.description
                unknown = [(d.name, d.type_code) for d in desc if d.type_code not in _OID_TYPES]
                if unknown:
                    raise TypeError(f"{schema}.{mart}: no Arrow type for Postgres column types {unknown}")
                arrow_schema = pa.schema([(d.name, _OID_TYPES[d.type_code]) for d in desc])
                writer = pq.ParquetWriter(tmp, arrow_schema, compression="zstd")
                try:
                    while True:
                        cols = list(zip(*batch)) if batch else [[] for _ in desc]
                        arrays = [pa.array([float(v) if v is not None and f.type == pa.float64() else v
                                            for v in col], type=f.type) for col, f in zip(cols, arrow_schema)]
                        writer.write_table(pa.Table.from_arrays(arrays, schema=arrow_schema))
                        n += len(batch)
                        if len(batch) < batch_rows:
                            break
                        batch = cur.fetchmany(batch_rows)
                finally:
                    writer.close()
            os.replace(tmp, target)
            counts[mart] = n
    return counts
