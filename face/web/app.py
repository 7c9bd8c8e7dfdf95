"""The ASGI app: the one-page site, /api/health, /api/models and /api/analyze over one `AnalyzerPool`."""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any, Literal, Optional

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from ..catalogue import DEFAULT_MODEL
from ..errors import ConfigError, HowoldError, ImageError
from .pool import Admission, AnalyzerPool, _Busy, _TimedOut
from .schemas import ANALYZE_REQUEST_BODY, AnalyzeResponse, HealthResponse, ModelsResponse, _errors
from .settings import CONFIG_ENV, DETECTOR_CHOICES, MULTIPART_OVERHEAD, TTA_CHOICES, WebConfig
from .uploads import _media_type, _multipart_file, _read_body, _size

#: On 503s while the server stops: come back later, and not on this connection.
STOPPING_HEADERS = {"Retry-After": "5", "Connection": "close"}

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def _page() -> str:
    # beside the package rather than importlib.resources.files("face"): with the editable
    # install, `face` imported from outside the repository is a namespace package, which
    # importlib.resources cannot read
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(config: WebConfig | None = None) -> FastAPI:
    """The ASGI app. The model loads in the background at start-up; /api/health says when it is ready."""
    config = config or WebConfig()
    pool = AnalyzerPool(config)
    page = _page()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["admission"] = Admission(config.max_concurrent, config.max_queue)
        loader = asyncio.ensure_future(anyio.to_thread.run_sync(pool.load, abandon_on_cancel=True))
        try:
            yield
        finally:
            loader.cancel()

    app = FastAPI(
        title="howold",
        version=_version(),
        summary="Age, gender and race of every face in a photo.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI / ReDoc load from a CDN; the page must work offline
        redoc_url=None,
    )
    app.state.pool = pool
    app.state.config = config
    app.state.stopping = False  # set by DrainingServer on SIGTERM: new requests get 503
    app.state.cut = asyncio.Event()  # set by DrainingServer when the grace period is over: those in flight get 503
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in error.errors())
        return JSONResponse({"detail": problems or "invalid request"}, status_code=422)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=PAGE_HEADERS)

    @app.get(
        "/api/health",
        response_model=HealthResponse,
        response_model_exclude_none=True,
        responses={503: {"model": HealthResponse, "description": "the model is still loading, failed to load, or the server is stopping"}},
        summary="Whether the model is loaded",
    )
    async def health() -> Any:
        admission: Admission | None = state.get("admission")
        body = HealthResponse(
            status="stopping" if app.state.stopping else pool.status,
            backbone=pool.backbone_name,
            model=pool.default_model,
            detector=config.detector if pool.status == "ready" else None,
            in_flight=admission.in_flight if admission else 0,
            queued=admission.waiting if admission else 0,
            detail=pool.error,
        )
        if body.status != "ready":
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "5", "Cache-Control": "no-store"})
        return JSONResponse(body.model_dump(exclude_none=True), headers={"Cache-Control": "no-store"})

    def catalogue() -> list:
        try:
            return pool.catalogue()
        except HowoldError as error:  # a user's model file with a bad sidecar, or a shipped model's name
            raise HTTPException(500, f"the models cannot be listed: {error}") from None

    @app.get("/api/models", response_model=ModelsResponse, responses=_errors(500), summary="The models a request may choose")
    async def models() -> Any:
        default = pool.default_model or config.model or (None if config.heads or config.backbone else DEFAULT_MODEL)  # before it loads: the expected one
        listed = [{**entry.to_dict(), "default": entry.name == default} for entry in catalogue()]
        return JSONResponse(ModelsResponse(models=listed).model_dump(), headers={"Cache-Control": "no-store"})

    @app.post(
        "/api/analyze",
        response_model=AnalyzeResponse,
        responses=_errors(400, 413, 415, 422, 500, 503, 504),
        openapi_extra={"requestBody": ANALYZE_REQUEST_BODY},
        summary="Age, gender and race of every face in a photo",
    )
    async def analyze(
        request: Request,
        # typed without Optional so that the spec shows a plain enum; absent means the server's default
        detector: Literal[DETECTOR_CHOICES] = Query(None, description="face detector; default: the server's"),
        tta: list[Literal["flip", "oversample", "none"]] = Query([], description="test-time augmentation, repeatable; default: flip; none: the plain chip alone"),
        model: str = Query(None, description="a model's name (see /api/models); default: the server's"),
    ) -> Any:
        if app.state.stopping:
            raise HTTPException(503, "the server is stopping; try again shortly", headers=STOPPING_HEADERS)
        # a request still running when the grace period ends is answered 503 (rather than cut
        # off by uvicorn with a 500); its analysis thread, if any, runs on unwatched
        work = asyncio.ensure_future(analyze_upload(request, detector, tta, model))
        cut = asyncio.ensure_future(app.state.cut.wait())
        try:
            await asyncio.wait({work, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            unfinished = not work.done()
            if unfinished:
                work.cancel()
        if unfinished:
            raise HTTPException(503, "the server stopped before this request was done; try again", headers=STOPPING_HEADERS)
        return work.result()

    async def analyze_upload(request: Request, detector: Optional[str], tta: list[str], model: Optional[str]) -> Any:
        started = time.perf_counter()
        admission: Admission = state["admission"]
        if pool.status == "loading":
            raise HTTPException(503, "the model is still loading; try again shortly", headers={"Retry-After": "5"})
        if pool.status == "failed":
            raise HTTPException(500, f"the model failed to load: {pool.error}")
        if model is not None:
            catalogue()  # a catalogue that cannot be read is the server's fault (500)
        try:
            chosen = pool.model_key(model)
        except ConfigError as error:
            raise HTTPException(422, f"model: {error}") from None

        media_type = _media_type(request)
        multipart = media_type == "multipart/form-data"
        if not (multipart or media_type in ("", "application/octet-stream") or media_type.startswith("image/")):
            raise HTTPException(415, f"unsupported content type {media_type!r}: send a multipart form with a `file` field, or the image as the body with an image/* or application/octet-stream content type")
        limit = config.max_upload_bytes + (MULTIPART_OVERHEAD if multipart else 0)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"upload of {_size(int(declared))} is larger than the limit of {_size(config.max_upload_bytes)}")
        if admission.full():  # refuse before reading the upload
            raise HTTPException(503, "too many requests are waiting; try again later", headers={"Retry-After": str(admission.retry_after())})

        body = await _read_body(request, limit)
        data = _multipart_file(body, request.headers["content-type"]) if multipart else body
        del body
        if len(data) > config.max_upload_bytes:
            raise HTTPException(413, f"upload larger than the limit of {_size(config.max_upload_bytes)}")

        selected = detector or config.detector
        from ..analyzer import DEFAULT_TTA  # loaded already: the pool is ready

        augment = tuple(option for option in TTA_CHOICES if option in tta) if tta else DEFAULT_TTA
        try:
            result = await admission.run(lambda: pool.analyze(data, selected, augment, chosen), config.request_timeout_s)
        except _Busy:
            raise HTTPException(503, "too many requests are waiting; try again later", headers={"Retry-After": str(admission.retry_after())}) from None
        except _TimedOut:
            raise HTTPException(504, f"the analysis took longer than {config.request_timeout_s:g} s") from None
        except ImageError as error:
            # load_image's refusal of too many pixels (its message names the decompression bomb)
            # is a valid image that is too large: 413; everything else is not a readable image
            status = 413 if "decompression bomb" in str(error) else 415
            raise HTTPException(status, str(error)) from None
        except HowoldError as error:
            raise HTTPException(422, str(error)) from None
        result["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 2)
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("howold")
    except PackageNotFoundError:
        return "0+unknown"


def app_from_env() -> FastAPI:
    """App factory for uvicorn (``--factory``): the WebConfig comes from $HOWOLD_WEB_CONFIG (JSON)."""
    text = os.environ.get(CONFIG_ENV)
    return create_app(WebConfig.from_json(text) if text else WebConfig())
