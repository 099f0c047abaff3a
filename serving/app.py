"""The FastAPI app: one `lifespan` builds the `Scorer` and loads the champions once (never at import).

Around the routes, two pure ASGI middlewares: `MetricsMiddleware` (latency histogram and error counts per route,
served on ``/metrics`` from a registry owned by this app) and `BodySizeLimitMiddleware` (413 before a large body
is read). Admin routes (reload, flush, promote, rollback) need ``Authorization: Bearer $LTRR_ADMIN_TOKEN``.
"""

from __future__ import annotations

import gc
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ml.settings import Settings
from serving.metrics import MetricsMiddleware, ServingMetrics
from serving.schemas import (
    AliasDecisionResponse,
    FlushResponse,
    HealthResponse,
    ModelsResponse,
    PromoteRequest,
    RankRequest,
    RankResponse,
    RollbackRequest,
)
from serving.scorer import Scorer

log = logging.getLogger(__name__)

# A valid /rank body is well under 1 KiB (query <= 256 chars, ids <= 128); anything near this is abuse or a bug.
MAX_BODY_BYTES = 16 * 1024


# async: FastAPI runs a sync dependency in the threadpool (a thread hand-off per dependency per request).
async def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServingMetrics:
    return request.app.state.metrics


ScorerDep = Annotated[Scorer, Depends(get_scorer)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]


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


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, f"request body larger than {limit} bytes")


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``: by ``Content-Length`` before reading, else while streaming (chunked).

    Raising an ``HTTPException`` from ``receive`` lets FastAPI's body parsing re-raise it as is (it turns other
    exceptions into a 400), so the client gets a 413 with the usual ``{"detail": ...}`` body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False   # the server rejects a malformed length itself
                if too_large:
                    await JSONResponse({"detail": _BodyTooLarge(self.max_bytes).detail}, 413)(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as exc:
            if started:
                raise
            await JSONResponse({"detail": exc.detail}, 413)(scope, receive, send)


def load_and_record(scorer: Scorer, metrics: ServingMetrics) -> dict[str, str | None]:
    """``scorer.load()`` with its outcome in the metrics: ``ok``, ``kept_previous`` (some family's new champion
    failed and the old one serves on; see ``/models``) or ``failed`` (nothing swapped; the old state serves on)."""
    try:
        versions = scorer.load()
    except Exception:
        metrics.reloads.labels(outcome="failed").inc()
        log.exception("reload failed; the previous state keeps serving")
        raise
    # The loaded state (catalog, indexes, models, Feast) is hundreds of thousands of long-lived objects; move them
    # out of the cyclic collector's view so a full collection does not walk them in the middle of a request
    # (gc.freeze; unfreeze first so the previous state's cycles can still be collected).
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    errors = scorer.state.load_errors if scorer.state else {}
    for family in errors:
        metrics.load_failures.labels(family=family).inc()
    metrics.reloads.labels(outcome="kept_previous" if errors else "ok").inc()
    metrics.set_versions(versions)
    return versions


def _models(scorer: Scorer) -> ModelsResponse:
    state = scorer.state
    return ModelsResponse(champions=dict(state.versions) if state else {},
                          loaded_at=state.loaded_at if state else None,
                          load_errors=dict(state.load_errors) if state else {})


def create_app(settings: Settings, feast_repo: Path, *, scorer_factory: Callable[[], Scorer] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """Assemble the app. ``scorer_factory`` replaces the default `Scorer(settings, feast_repo=...)` (tests)."""
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scorer = scorer_factory() if scorer_factory else Scorer(settings, feast_repo=feast_repo)
        # Events a killed scorer acknowledged but never compacted: into Parquet before serving new ones.
        await run_in_threadpool(scorer.events.recover)
        await run_in_threadpool(load_and_record, scorer, metrics)
        app.state.scorer = scorer
        try:
            yield
        finally:
            await run_in_threadpool(scorer.close)  # flush the event log on shutdown

    app = FastAPI(title="ltrr scorer", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post("/rank", response_model=RankResponse)
    async def rank(req: RankRequest, request: Request) -> Response:
        # On the event loop, not the threadpool: rank() is CPU-bound Python (the GIL lets one run at a time either
        # way), and the thread hand-off there and back cost ~0.1 ms of a ~2 ms request. Other routes (reload, flush,
        # health) stay sync, in the threadpool. The hot route reads the scorer and metrics off the app itself (two
        # fewer dependencies to solve per call).
        resp = request.app.state.scorer.rank(req)
        if resp.degraded:
            request.app.state.metrics.degraded.inc()
        # The scorer built a valid RankResponse: serialize it once (pydantic-core, straight to JSON bytes) instead
        # of FastAPI validating it again against response_model and encoding the result (documented schema kept).
        return Response(content=resp.model_dump_json(), media_type="application/json")

    @app.get("/health", response_model=HealthResponse)
    def health(scorer: ScorerDep) -> HealthResponse:
        state = scorer.state
        return HealthResponse(status="ok" if state else "loading", n_items=state.retrieval.index.n if state else 0,
                              requests=scorer.n_requests, degraded_requests=scorer.n_degraded)

    @app.get("/models", response_model=ModelsResponse)
    def models(scorer: ScorerDep) -> ModelsResponse:
        return _models(scorer)

    @app.get("/metrics", include_in_schema=False)
    def prometheus(metrics: MetricsDep) -> Response:
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    @app.post("/admin/reload", response_model=ModelsResponse)
    def reload(_: AdminDep, scorer: ScorerDep, metrics: MetricsDep) -> ModelsResponse:
        try:
            load_and_record(scorer, metrics)
        except Exception as exc:  # noqa: BLE001 - any failure: report it; the old state keeps serving
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                                f"reload failed, previous champions still serving: {type(exc).__name__}: {exc}")
        return _models(scorer)

    @app.post("/admin/flush", response_model=FlushResponse)
    def flush(_: AdminDep, scorer: ScorerDep) -> FlushResponse:
        return FlushResponse(written=scorer.events.flush())

    def _after_alias_move(decision, scorer: Scorer, metrics: ServingMetrics) -> AliasDecisionResponse:
        load_and_record(scorer, metrics)
        m = _models(scorer)
        return AliasDecisionResponse(family=decision.family, action=decision.action, version=decision.version,
                                     replaced_version=decision.replaced_version, record_path=decision.record_path,
                                     champions=m.champions, load_errors=m.load_errors)

    @app.post("/admin/rollback", response_model=AliasDecisionResponse)
    def rollback(body: RollbackRequest, _: AdminDep, scorer: ScorerDep, metrics: MetricsDep,
                 settings: SettingsDep) -> AliasDecisionResponse:
        """``@previous_champion`` -> ``@champion`` in MLflow (recorded), then reload."""
        from ml.registry import rollback_champion

        try:
            decision = rollback_champion(settings.tracking_uri, body.family, reports_dir=settings.reports_dir,
                                         model_prefix=settings.model_prefix, reason=body.reason, actor="admin-api")
        except LookupError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc))
        return _after_alias_move(decision, scorer, metrics)

    @app.post("/admin/promote", response_model=AliasDecisionResponse)
    def promote(body: PromoteRequest, _: AdminDep, scorer: ScorerDep, metrics: MetricsDep,
                settings: SettingsDep) -> AliasDecisionResponse:
        """Make a version ``@champion`` bypassing the gate (recorded as a manual decision), then reload."""
        from ml.registry import promote_version

        try:
            decision = promote_version(settings.tracking_uri, body.family, body.version,
                                       reports_dir=settings.reports_dir, model_prefix=settings.model_prefix,
                                       reason=body.reason, actor="admin-api")
        except LookupError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
        return _after_alias_move(decision, scorer, metrics)

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    # Added last = outermost: also times the 413s, labelled by path when it is one of ours (no route matched yet).
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=frozenset(r.path for r in app.routes))
    return app


def run(settings: Settings, feast_repo: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve with uvicorn (one worker: the scorer holds its state in memory)."""
    import uvicorn

    uvicorn.run(create_app(settings, feast_repo), host=host, port=port)


def app_from_env() -> FastAPI:
    """Uvicorn factory (``uvicorn serving.app:app_from_env --factory``): settings from the ``LTRR_*`` environment.

    Lets deployments and the benchmark choose uvicorn's own flags (``--no-access-log``, ``--workers``...).
    """
    settings = Settings()
    return create_app(settings, settings.feast_repo)
