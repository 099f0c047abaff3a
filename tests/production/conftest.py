"""Production-profile fixtures: the real PostgreSQL and Redis (127.0.0.1:5432 / :6379 unless LTRR_PG_DSN /
LTRR_REDIS_URL say otherwise).

When a service is unreachable the tests are skipped with a message saying how to start it, except under
``CI=true``, where that is a failure (`.ci/run` starts the services first). Every test run creates its own
databases (``ltrr_<service>_t<random>``) and Feast project (its Redis keys), and drops them afterwards, so it
never touches a user's ``ltrr_*`` databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ml.settings import Settings

TOKEN = "production-test-token"


def _require(service: str, check) -> None:
    from ltrr.infra import ServiceUnavailable

    try:
        check()
    except ServiceUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {service} is unreachable: {exc}", pytrace=False)
        pytest.skip(f"{service} unreachable, production-profile test skipped: {exc}")


def production_settings(home, suffix: str, **kw) -> Settings:
    """Production settings with their own databases (suffix) and Feast project; DSN/URL from the env."""
    return Settings(home=home, profile="production", admin_token=TOKEN, db_suffix=suffix,
                    feast_project=f"ltrr{suffix}", **kw)


@pytest.fixture(scope="session")
def services() -> None:
    """Skip (or, under CI=true, fail) unless PostgreSQL and Redis answer."""
    from ltrr.infra import check_postgres, check_redis

    probe = Settings(profile="production", admin_token=TOKEN)
    _require("PostgreSQL", lambda: check_postgres(probe))
    _require("Redis", lambda: check_redis(probe.redis_url))


@pytest.fixture(scope="module")
def prod(services, tmp_path_factory) -> Iterator[Settings]:
    """A production Settings with freshly created databases, dropped (with its Redis keys) after the module."""
    from ltrr.infra import setup, teardown

    suffix = f"_t{uuid.uuid4().hex[:8]}"
    settings = production_settings(tmp_path_factory.mktemp("prod") / "home", suffix)
    setup(settings)
    try:
        yield settings
    finally:
        teardown(settings)
