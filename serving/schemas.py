"""Typed request/response models of the scorer API (shared by `Scorer.rank` and the FastAPI app)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Device = Literal["desktop", "mobile", "app"]


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=256, description="What the user typed.")
    user_id: str = Field(min_length=1, max_length=128)
    session_id: str | None = Field(default=None, max_length=128)
    device: Device = "desktop"
    locale: str | None = Field(default=None, max_length=35)
    k: int | None = Field(default=None, ge=1, le=100, description="Page size; default settings.page_size.")
    request_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="Optional caller-chosen id (replays); a fresh UUID otherwise. Seeds the request's randomness.",
    )

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query must not be blank")
        return v


class RankedItem(BaseModel):
    item_id: str
    title: str
    position: int
    strategy: str
    score: float


class RankResponse(BaseModel):
    request_id: str
    query_norm: str
    items: list[RankedItem]
    strategy: str = Field(description="The primary strategy the policy sampled.")
    propensity: float = Field(description="Probability the policy gave that strategy (logged for off-policy evaluation).")
    policy_version: str
    n_candidates: int
    degraded: bool = Field(description="True when online features were unavailable and defaults were used.")


class HealthResponse(BaseModel):
    status: Literal["ok", "loading"]
    n_items: int
    requests: int
    degraded_requests: int


class ModelsResponse(BaseModel):
    champions: dict[str, str | None]
    loaded_at: datetime | None
    load_errors: dict[str, str] = Field(
        default_factory=dict,
        description="Families whose champion failed to load on the last (re)load, and why; the previous version "
                    "(listed in `champions`) kept serving.")


Family = Literal["bandit", "ranker", "conversion", "q2e", "attributes"]


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: Family
    reason: str = Field(default="manual rollback", min_length=1, max_length=500)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: Family
    version: str = Field(min_length=1, max_length=20, pattern=r"^[0-9]+$",
                         description="Registered model version number to make @champion (bypasses the gate).")
    reason: str = Field(default="manual promotion", min_length=1, max_length=500)


class AliasDecisionResponse(BaseModel):
    family: str
    action: Literal["rollback", "manual_promote"]
    version: str = Field(description="The version that is @champion now.")
    replaced_version: str | None
    record_path: str
    champions: dict[str, str | None] = Field(description="What the scorer serves after reloading.")
    load_errors: dict[str, str] = Field(default_factory=dict)


class FlushResponse(BaseModel):
    written: dict[str, int]
