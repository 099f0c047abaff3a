"""One typed settings object, read from the environment (prefix ``LTRR_``) and a profile.

Built once by an entry point (CLI, DAG task, test); nothing is created or configured at import.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

FAMILIES: tuple[str, ...] = ("bandit", "ranker", "conversion", "q2e", "attributes")

_PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "dev-token"}


class Settings(BaseSettings):
    """Every path and endpoint the platform uses. ``embedded`` needs no server at all."""

    model_config = SettingsConfigDict(env_prefix="LTRR_", extra="ignore", populate_by_name=True)

    # LTRR_PROFILE, or PROFILE (the name the issue uses); LTRR_PROFILE wins when both are set.
    profile: Literal["embedded", "production"] = Field(
        default="embedded", validation_alias=AliasChoices("LTRR_PROFILE", "PROFILE"))
    home: Path = Field(default=Path(".ltrr"), description="Root folder for every embedded store.")
    project_dir: Path | None = Field(default=None, description="Checkout holding dbt_project/ and feature_repo/.")

    # production endpoints (ignored by the embedded profile). The DSN names the server and the credentials;
    # its database part is ignored: every service gets its own database, `{db_prefix}<service>{db_suffix}`
    # (ltrr_airflow, ltrr_mlflow, ltrr_feast, ltrr_warehouse), so a test can use a suffix of its own and drop
    # exactly what it created. A password belongs in the environment (LTRR_PG_DSN), never in a file.
    postgres_dsn: str = Field(default="postgresql://postgres@127.0.0.1:5432/postgres",
                              validation_alias=AliasChoices("LTRR_PG_DSN", "LTRR_POSTGRES_DSN"))
    redis_url: str = "redis://127.0.0.1:6379/0"
    db_prefix: str = Field(default="ltrr_", pattern=r"^[a-z_][a-z0-9_]*$")
    db_suffix: str = Field(default="", pattern=r"^[a-z0-9_]*$")
    # Feast project in the registry and the key prefix in Redis; a test sets its own so keys never collide.
    feast_project: str = Field(default="ltrr", pattern=r"^[A-Za-z0-9_]+$")
    # Airflow executor under the production profile: LocalExecutor (tested) or CeleryExecutor (documented in
    # docs/production.md; needs apache-airflow-providers-celery and Redis as the broker).
    airflow_executor: Literal["LocalExecutor", "CeleryExecutor"] = "LocalExecutor"

    # MLflow: empty means the profile default (sqlite under home for embedded)
    mlflow_tracking_uri: str = ""
    model_prefix: str = "ltrr-"

    # simulated / serving knobs
    attribution_window_days: int = Field(default=7, ge=1, le=60)
    page_size: int = Field(default=10, ge=1, le=100)
    candidate_budget: int = Field(default=50, ge=1, le=1000)
    policy_epsilon: float = Field(default=0.1, gt=0.0, lt=1.0)
    # Share of pages whose order the scorer shuffles (logged as position_randomized): clicks on them judge any
    # ranker without the position bias of the order that was served. Costs a little quality on those pages.
    position_explore_rate: float = Field(default=0.1, ge=0.0, le=1.0)

    admin_token: str = "dev-token"
    scorer_url: str = ""  # when set, the DAG's last task POSTs /admin/reload there

    @field_validator("home", "project_dir")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # Tasks may run in other processes/working directories (Airflow workers): pin paths now.
        return v.expanduser().resolve() if v is not None else None

    @model_validator(mode="after")
    def _refuse_placeholder_secret_in_production(self) -> Settings:
        if self.profile == "production" and self.admin_token in _PLACEHOLDER_SECRETS:
            raise ValueError(
                "LTRR_ADMIN_TOKEN is a placeholder; set a real secret in the environment for the production profile"
            )
        return self

    # ---- derived paths (pure functions of home; no mkdir here) ----
    @property
    def repo_root(self) -> Path:
        return (self.project_dir or Path(__file__).resolve().parent.parent).resolve()

    @property
    def dbt_project_dir(self) -> Path:
        return self.repo_root / "dbt_project"

    @property
    def feast_repo(self) -> Path:
        return self.repo_root / "feature_repo"

    @property
    def dags_dir(self) -> Path:
        return self.repo_root / "dags"

    @property
    def raw_dir(self) -> Path:
        return self.home / "raw"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def marts_dir(self) -> Path:
        return self.home / "marts"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    # ---- production: one PostgreSQL database per service (pure string work, no connection) ----
    SERVICES: ClassVar[tuple[str, ...]] = ("airflow", "mlflow", "feast", "warehouse")

    def database(self, service: str) -> str:
        """The database name of one service, e.g. ``ltrr_mlflow`` (plus ``db_suffix`` in tests)."""
        if service not in self.SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {', '.join(self.SERVICES)}")
        return f"{self.db_prefix}{service}{self.db_suffix}"

    def postgres_url(self, service: str | None = None, driver: str | None = None) -> str:
        """``postgres_dsn`` pointed at one service's database (``None``: the DSN's own, maintenance, database),
        with an SQLAlchemy driver suffix when asked (``psycopg2`` for Airflow/MLflow, ``psycopg`` for Feast)."""
        parts = urlsplit(self.postgres_dsn)
        if parts.scheme not in ("postgresql", "postgres") and not parts.scheme.startswith("postgresql+"):
            raise ValueError(f"LTRR_PG_DSN must be a postgresql:// URL, got scheme {parts.scheme!r}")
        scheme = "postgresql" + (f"+{driver}" if driver else "")
        path = f"/{self.database(service)}" if service else parts.path
        return urlunsplit((scheme, parts.netloc, path, parts.query, ""))

    def postgres_params(self) -> dict[str, str]:
        """host, port, user, password of ``postgres_dsn`` (defaults for the parts it leaves out)."""
        parts = urlsplit(self.postgres_dsn)
        return {"host": parts.hostname or "127.0.0.1", "port": str(parts.port or 5432),
                "user": parts.username or "postgres", "password": parts.password or ""}

    @property
    def warehouse_schema(self) -> str:
        """Schema of the dbt marts in the warehouse database (sources are in schema ``raw``)."""
        return "ltrr"

    @property
    def tracking_uri(self) -> str:
        """MLflow backend store: sqlite under home (embedded) or the ``mlflow`` database (production).
        Artifacts stay on a file path in both (``{home}/mlartifacts``; see ml/registry.py)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.profile == "production":
            return self.postgres_url("mlflow", driver="psycopg2")
        return f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    def registered_model(self, family: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
        return f"{self.model_prefix}{family}"

    def ensure_dirs(self) -> None:
        """Create the embedded folders. Called by entry points, never at import."""
        for p in (self.raw_dir, self.quarantine_dir, self.marts_dir, self.feast_dir, self.reports_dir,
                  self.models_dir, self.artifacts_dir):
            p.mkdir(parents=True, exist_ok=True)
