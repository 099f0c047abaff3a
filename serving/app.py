"""The FastAPI app: one `lifespan` builds the `Scorer` and loads the champions once (never at import)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ml.settings import Settings
from serving.schemas import FlushResponse, HealthResponse, ModelsResponse, RankRequest, RankResponse
from serving.scorer import Scorer


def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ScorerDep = Annotated[Scorer, Depends(get_scorer)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_admin(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), settings.admin_token.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "admin endpoints need 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})


AdminDep = Annotated[None, Depends(require_admin)]


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's usual `detail` plus one readable line naming each offending field."""
    errors = exc.errors()
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return JSONResponse(status_code=422, content={"message": "invalid request: " + "; ".join(parts),
                                                  "detail": jsonable(errors)})


def jsonable(errors: list[dict]) -> list[dict]:
    from fastapi.encoders import jsonable_encoder
    return jsonable_encoder([{k: v for k, v in e.items() if k != "ctx"} for e in errors])


def create_app(settings: Settings, feast_repo: Path, *,
               scorer_factory: Callable[[], Scorer] | None = None) -> FastAPI:
    """Assemble the app. ``scorer_factory`` replaces the default `Scorer(settings, feast_repo=...)` (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scorer = scorer_factory() if scorer_factory else Scorer(settings, feast_repo=feast_repo)
        await run_in_threadpool(scorer.load)
        app.state.scorer = scorer
        try:
            yield
        finally:
            await run_in_threadpool(scorer.close)  # flush the event log on shutdown

    app = FastAPI(title="ltrr scorer", lifespan=lifespan)
    app.state.settings = settings
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post("/rank", response_model=RankResponse)
    def rank(req: RankRequest, scorer: ScorerDep) -> RankResponse:  # sync: runs in the threadpool (CPU work)
        return scorer.rank(req)

    @app.get("/health", response_model=HealthResponse)
    def health(scorer: ScorerDep) -> HealthResponse:
        state = scorer.state
        return HealthResponse(status="ok" if state else "loading", n_items=state.retrieval.index.n if state else 0,
                              requests=scorer.n_requests, degraded_requests=scorer.n_degraded)

    @app.get("/models", response_model=ModelsResponse)
    def models(scorer: ScorerDep) -> ModelsResponse:
        state = scorer.state
        return ModelsResponse(champions=dict(state.versions) if state else {},
                              loaded_at=state.loaded_at if state else None)

    @app.post("/admin/reload", response_model=ModelsResponse)
    def reload(_: AdminDep, scorer: ScorerDep) -> ModelsResponse:
        versions = scorer.load()
        return ModelsResponse(champions=versions, loaded_at=scorer.state.loaded_at)

    @app.post("/admin/flush", response_model=FlushResponse)
    def flush(_: AdminDep, scorer: ScorerDep) -> FlushResponse:
        return FlushResponse(written=scorer.events.flush())

    return app


def run(settings: Settings, feast_repo: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve with uvicorn (one worker: the scorer holds its state in memory)."""
    import uvicorn

    uvicorn.run(create_app(settings, feast_repo), host=host, port=port)
