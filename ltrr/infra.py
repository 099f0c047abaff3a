"""`ltrr infra`: create (and check, and drop) what the production profile needs on an existing PostgreSQL and
Redis. Idempotent: every statement is "create if missing", so running it twice changes nothing.

PostgreSQL: one database per service, ``Settings.database(service)`` (ltrr_airflow, ltrr_mlflow, ltrr_feast,
ltrr_warehouse, plus ``LTRR_DB_SUFFIX``), optionally owned by a login role of their own (``--role``, its
password from ``LTRR_PG_ROLE_PASSWORD``), and the warehouse's schemas ``raw`` and ``ltrr``. Redis: reachable,
and its version and eviction policy reported (an online store must not be evicted silently:
``maxmemory-policy noeviction`` or a ``volatile-*`` policy, since Feast sets a TTL on every key).
The connecting user (``LTRR_PG_DSN``) needs CREATEDB (and CREATEROLE for ``--role``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from ltrr._output import print_error
from ml.settings import Settings

infra_app = typer.Typer(help="Production profile: create / check / drop the PostgreSQL databases and roles and "
                             "check Redis (LTRR_PG_DSN, LTRR_REDIS_URL, LTRR_DB_SUFFIX).", no_args_is_help=True)

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class ServiceUnavailable(RuntimeError):
    """A service of the production profile cannot be reached; the message says how to start it."""


def start_hint(service: str) -> str:
    return {
        "postgres": "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
                    "(or point LTRR_PG_DSN at a running server)",
        "redis": "start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
                 "--appendonly no` (or point LTRR_REDIS_URL at a running server)",
    }[service]


@dataclass
class SetupReport:
    databases: dict[str, str] = field(default_factory=dict)  # database -> "created" | "exists"
    role: str | None = None
    role_status: str | None = None
    redis: dict[str, Any] = field(default_factory=dict)


def _admin_connect(settings: Settings):
    import psycopg

    try:
        return psycopg.connect(settings.postgres_url(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pg = settings.postgres_params()
        raise ServiceUnavailable(f"PostgreSQL at {pg['host']}:{pg['port']} is unreachable ({exc}); "
                                 f"{start_hint('postgres')}") from exc


def check_postgres(settings: Settings) -> str:
    """The server's version string; raises ServiceUnavailable with a start hint."""
    with _admin_connect(settings) as conn:
        return str(conn.execute("show server_version").fetchone()[0])


def check_redis(url: str) -> dict[str, Any]:
    """Ping Redis; return its version and eviction policy. Raises ServiceUnavailable with a start hint."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
        info = client.info("server")
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        except redis.ResponseError:  # CONFIG disabled (managed Redis): not an error
            policy = None
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"Redis at {url} is unreachable ({exc}); {start_hint('redis')}") from exc
    finally:
        client.close()
    warn = policy is not None and policy not in ("noeviction",) and not str(policy).startswith("volatile")
    return {"version": info.get("redis_version"), "maxmemory_policy": policy,
            "warning": "allkeys-* eviction may drop online features silently" if warn else None}


def setup(settings: Settings, role: str | None = None, role_password: str | None = None,
          check_redis_too: bool = True) -> SetupReport:
    """Create the role (optional), the four databases and the warehouse schemas if missing; check Redis."""
    from psycopg import sql

    report = SetupReport(role=role)
    if role is not None and not _IDENT.match(role):
        raise ValueError(f"role must be a lower-case SQL identifier, got {role!r}")
    with _admin_connect(settings) as conn:
        if role:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
            if not exists:
                if not role_password:
                    raise ValueError(f"role {role!r} does not exist; set LTRR_PG_ROLE_PASSWORD to create it")
                conn.execute(sql.SQL("create role {} login password {}").format(
                    sql.Identifier(role), sql.Literal(role_password)))
                report.role_status = "created"
            else:
                report.role_status = "exists"
        for service in settings.SERVICES:
            db = settings.database(service)
            if conn.execute("select 1 from pg_database where datname = %s", (db,)).fetchone():
                report.databases[db] = "exists"
                continue
            stmt = sql.SQL("create database {}").format(sql.Identifier(db))
            if role:
                stmt = sql.SQL("create database {} owner {}").format(sql.Identifier(db), sql.Identifier(role))
            conn.execute(stmt)
            report.databases[db] = "created"
    # schemas of the warehouse (dbt creates its own too; the owner matters when a role is used)
    import psycopg

    with psycopg.connect(settings.postgres_url("warehouse"), autocommit=True, connect_timeout=5) as conn:
        for schema in ("raw", settings.warehouse_schema):
            if role:
                conn.execute(sql.SQL("create schema if not exists {} authorization {}").format(
                    sql.Identifier(schema), sql.Identifier(role)))
            else:
                conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    if check_redis_too:
        report.redis = check_redis(settings.redis_url)
    return report


def teardown(settings: Settings, role: str | None = None) -> dict[str, Any]:
    """Drop the four databases (``WITH (FORCE)``: open connections are closed), the role if given, and the
    Redis keys of ``settings.feast_project`` (Feast suffixes every key with the project name)."""
    import redis
    from psycopg import sql

    dropped = []
    with _admin_connect(settings) as conn:
        for service in settings.SERVICES:
            db = settings.database(service)
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db)))
            dropped.append(db)
        if role:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    n = 0
    try:
        keys = list(client.scan_iter(match=b"*" + settings.feast_project.encode(), count=1000))
        for i in range(0, len(keys), 500):
            n += client.delete(*keys[i:i + 500])
    except redis.RedisError:
        pass
    finally:
        client.close()
    return {"dropped_databases": dropped, "redis_keys_deleted": n}


# ------------------------------------------------------------------------------------------------- CLI

RoleOpt = Annotated[str | None, typer.Option("--role", help="Login role owning the databases (created if "
                                                           "missing; password from LTRR_PG_ROLE_PASSWORD).")]


def _settings() -> Settings:
    # the admin token is irrelevant here: do not refuse setup because the scorer's secret is not set yet
    os.environ.setdefault("LTRR_ADMIN_TOKEN", "unused-by-infra-setup")
    return Settings(profile="production")


@infra_app.command("setup")
def setup_cmd(role: RoleOpt = None) -> None:
    """Create the databases (and role) on an existing PostgreSQL and check Redis. Safe to re-run."""
    from rich.console import Console

    console = Console()
    settings = _settings()
    try:
        rep = setup(settings, role=role, role_password=os.environ.get("LTRR_PG_ROLE_PASSWORD"))
    except (ServiceUnavailable, ValueError) as exc:
        print_error(console, str(exc))
        raise typer.Exit(2)
    if role:
        console.print(f"role {role}: {rep.role_status}")
    for db, status in rep.databases.items():
        console.print(f"database {db}: {status}")
    console.print(f"redis {settings.redis_url}: version {rep.redis.get('version')}, "
                  f"maxmemory-policy {rep.redis.get('maxmemory_policy')}")
    if rep.redis.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {rep.redis['warning']}")


@infra_app.command("check")
def check_cmd() -> None:
    """Check that PostgreSQL, the four databases and Redis are reachable."""
    import psycopg
    from rich.console import Console

    console = Console()
    settings = _settings()
    try:
        console.print(f"postgres: server {check_postgres(settings)}")
        for service in settings.SERVICES:
            with psycopg.connect(settings.postgres_url(service), connect_timeout=5):
                console.print(f"  {settings.database(service)}: ok")
        console.print(f"redis: version {check_redis(settings.redis_url)['version']}")
    except (ServiceUnavailable, psycopg.OperationalError) as exc:
        print_error(console, f"{exc}\nrun `ltrr infra setup` to create missing databases")
        raise typer.Exit(1)


@infra_app.command("teardown")
def teardown_cmd(role: RoleOpt = None,
                 yes: Annotated[bool, typer.Option("--yes", help="Really drop them.")] = False) -> None:
    """Drop the four databases (and role) and the Feast project's Redis keys. Destroys data: needs --yes."""
    settings = _settings()
    if not yes:
        dbs = ", ".join(settings.database(s) for s in settings.SERVICES)
        typer.echo(f"would drop {dbs} and Redis keys of Feast project {settings.feast_project!r}; pass --yes")
        raise typer.Exit(1)
    typer.echo(teardown(settings, role=role))
