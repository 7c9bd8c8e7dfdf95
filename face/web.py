"""The how-old web app: a one-page site and a JSON API over one shared Analyzer.

Why FastAPI on uvicorn: the API is one upload endpoint whose real work is a few hundred
milliseconds of CPU-bound inference. An asyncio server keeps the waiting (slow uploads,
the queue, timeouts) cheap and lets us bound the expensive part exactly: an
``asyncio.Semaphore`` admits ``max_concurrent`` analyses, a counter allows ``max_queue`` more
to wait, and the inference itself runs in a worker thread with a deadline. FastAPI adds
the OpenAPI document (``/openapi.json``) that clients and the schemathesis fuzzer read,
and uvicorn can fork worker processes, each loading its own model. Flask/gunicorn would
need one OS thread or process per waiting upload and hand-written OpenAPI; aiohttp has no
spec generation.

Uploads are never written to disk: the body is read into memory, counted while it
arrives (so a chunked upload cannot pass the limit), and multipart bodies are parsed
in memory with python-multipart (Starlette's own form parser spools files over 1 MiB to
a temporary file, so it is not used).

On a machine with few cores, concurrent analyses only make TensorFlow's threads wait for
each other. So admitted uploads queue for one model lock, and the thread that takes it
analyses every upload waiting with the same options in one batch: with 8 clients the
server then does more requests a second than one client in a loop
(benchmarks/bench_web_load.py). The model is warmed up for every batch size at start-up.

Stopping: on SIGTERM (what container runtimes and schedulers send) or Ctrl-C, ``howold
serve`` first drains: requests in flight finish, for up to a grace period, while new ones get
503 with ``Connection: close`` and /api/health says "stopping" (so a load balancer moves on);
then uvicorn shuts down. A second signal skips the wait. (With several worker processes,
uvicorn's own shutdown applies: new connections are refused, those in flight finish within
the grace period.)

Run it with ``howold serve`` or ``uvicorn face.web:app_from_env --factory``.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import anyio
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from .errors import HowoldError, ImageError

# a child of uvicorn's logger, so that messages show wherever uvicorn's own do
logger = logging.getLogger("uvicorn.error").getChild("howold")

MiB = 1024 * 1024
#: Room for the multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
#: Environment variable holding a JSON WebConfig, for `app_from_env` (uvicorn workers).
CONFIG_ENV = "HOWOLD_WEB_CONFIG"
DETECTOR_CHOICES = ("yunet", "hog", "cnn")  # the registry's, spelled out for the OpenAPI enum
#: dlib's CNN detector takes about 16 s on a 1024x1024 image on a laptop-class CPU core, and
#: its cost grows with the pixel count; upsampled 12-megapixel photos would take minutes and
#: hold a slot long after their 504. So on the server it sees at most 1024 px and no upsampling
#: (it still finds faces of about 40 px and up at that scale).
CNN_OPTIONS = {"upsample": 0, "max_detect_side": 1024}
TTA_CHOICES = ("flip", "oversample")


@dataclass(frozen=True)
class WebConfig:
    """How the server is set up. `backbone=None` is the default backbone."""

    backbone: Optional[str] = None
    detector: str = "yunet"
    heads: Optional[str] = None
    max_upload_bytes: int = 10 * MiB
    max_concurrent: int = 4  # uploads admitted at once: those waiting for the model go through it in one batch
    max_queue: int = 8  # analyses waiting for a slot; beyond that: 503 + Retry-After
    request_timeout_s: float = 30.0  # queueing + analysis; beyond that: 504
    cors_origins: tuple[str, ...] = ()  # no CORS headers unless origins are given
    max_connections: int = 64  # uvicorn's limit_concurrency in `serve`: bounds memory held by uploads

    def __post_init__(self) -> None:
        if self.detector not in DETECTOR_CHOICES:
            raise ValueError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTOR_CHOICES)}")
        if self.max_upload_bytes <= 0 or self.max_concurrent <= 0 or self.max_queue < 0 or self.request_timeout_s <= 0:
            raise ValueError("max_upload_bytes, max_concurrent and request_timeout_s must be positive, max_queue >= 0")
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WebConfig":
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{CONFIG_ENV}: unknown settings {sorted(unknown)}")
        return cls(**values)


# ---- the documented shapes ----------------------------------------------------------------


class ErrorResponse(BaseModel):
    detail: str = Field(description="what went wrong, in words")


class HealthResponse(BaseModel):
    status: Literal["loading", "ready", "failed", "stopping"]
    backbone: Optional[str] = None
    detector: Optional[str] = None
    in_flight: int = 0
    queued: int = 0
    detail: Optional[str] = None


class Face(BaseModel):
    model_config = ConfigDict(extra="allow")

    box: list[int] = Field(min_length=4, max_length=4, description="[left, top, right, bottom] in image pixels")
    detection_confidence: Optional[float] = None
    age: float
    age_interval: list[float] = Field(min_length=2, max_length=2, description="10th-90th percentile")
    age_group: str
    age_group_confidence: float
    gender: str
    gender_confidence: float
    race: str
    race_confidences: dict[str, float]


class ImageSize(BaseModel):
    width: int
    height: int


class Timings(BaseModel):
    decode: float
    detect: float = Field(description="of the batch this upload was analysed in")
    predict: float = Field(description="of the batch this upload was analysed in")
    total: float
    batched_with: int = Field(0, description="other uploads analysed in the same batch")


class AnalyzeResponse(BaseModel):
    faces: list[Face] = Field(description="one per face, largest first")
    image: ImageSize
    timings_ms: Timings


def _errors(*codes: int) -> dict[int, dict[str, Any]]:
    descriptions = {
        400: "the upload was interrupted or is not valid multipart",
        413: "upload larger than the limit, or an image with too many pixels (a possible decompression bomb)",
        415: "not an image, a corrupt one, or a content type other than multipart/form-data, image/* or application/octet-stream",
        422: "invalid query parameters, or a multipart body without a `file` field",
        500: "the model failed to load",
        503: "the model is still loading, too many requests are queued, or the server is stopping; see Retry-After",
        504: "the analysis took longer than the server's time limit",
    }
    responses: dict[int, dict[str, Any]] = {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}
    if 503 in responses:
        responses[503]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
    return responses


_BINARY = {"type": "string", "format": "binary"}
ANALYZE_REQUEST_BODY = {
    "required": True,
    "description": "The photo: a multipart form with a `file` field, or the image bytes as the raw body.",
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": {**_BINARY, "description": "the photo"}}},
            "encoding": {"file": {"contentType": "image/*, application/octet-stream"}},
        },
        "image/*": {"schema": _BINARY},
        "application/octet-stream": {"schema": _BINARY},
    },
}


# ---- the model, shared by the requests of one process -------------------------------------


class _Busy(Exception):
    pass


class _TimedOut(Exception):
    pass


class AnalyzerPool:
    """The analyzers of one process: one per detector (built lazily), sharing one backbone.

    Test-time augmentation variants are shallow copies of a detector's analyzer with
    another `tta`, so they share its networks and its lock. Inference goes through one
    process-wide lock, since all of them share the backbone.
    """

    def __init__(self, config: WebConfig):
        self.config = config
        self.status = "loading"
        self.error: Optional[str] = None
        self.backbone_name: Optional[str] = None
        self._analyzers: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._build_lock = threading.RLock()  # re-entered: a TTA variant builds its base analyzer first
        self._model_lock = threading.Lock()
        self._pending: list[_Job] = []
        self._pending_lock = threading.Lock()

    def load(self) -> None:
        """Build the default detector's analyzer (blocking; called from a thread at start-up)."""
        started = time.perf_counter()
        try:
            analyzer = self.get(self.config.detector, ())
            analyzer.warm_up()  # no request pays for tracing a face count it has not met before
        except Exception as error:  # noqa: BLE001 - any failure is reported by /api/health
            self.status, self.error = "failed", f"{type(error).__name__}: {error}"
            if isinstance(error, HowoldError):  # a clear message needs no traceback
                logger.error("howold: the model failed to load: %s", error)
            else:
                logger.exception("howold: the model failed to load")
            return
        self.backbone_name = analyzer.backbone.name
        self.status = "ready"
        logger.info("howold: model ready (backbone %s, detector %s) in %.1f s", self.backbone_name, self.config.detector, time.perf_counter() - started)

    def get(self, detector: str, tta: tuple[str, ...]):
        key = (detector, tta)
        analyzer = self._analyzers.get(key)
        if analyzer is not None:
            return analyzer
        with self._build_lock:
            if key in self._analyzers:
                return self._analyzers[key]
            if tta:
                analyzer = copy.copy(self.get(detector, ()))
                analyzer.tta = tta
            else:
                from .analyzer import Analyzer
                from .backbones import DEFAULT_BACKBONE

                shared = next(iter(self._analyzers.values()), None)
                backbone = shared.backbone if shared is not None else (self.config.backbone or DEFAULT_BACKBONE)
                options = CNN_OPTIONS if detector == "cnn" else {}
                analyzer = Analyzer(backbone=backbone, detector=detector, heads=self.config.heads, tta=(), **options)
            self._analyzers[key] = analyzer
            return analyzer

    def analyze(self, data: bytes, detector: str, tta: tuple[str, ...]) -> dict:
        """Decode and analyse one upload (blocking). Raises ImageError for a bad image.

        Uploads that wait for the model are analysed together: whichever thread gets the
        model lock takes every waiting upload with the same options, and their faces go
        through the network in one batch (bigger batches use the cores better). Decoding
        runs under the lock too: on a small machine a decode beside an inference only
        slows TensorFlow's threads down.
        """
        job = _Job(data, (detector, tta))
        with self._pending_lock:
            self._pending.append(job)
        with self._model_lock:
            if not job.done:
                with self._pending_lock:
                    batch = [waiting for waiting in self._pending if waiting.options == job.options]
                    for waiting in batch:
                        self._pending.remove(waiting)
                self._run(batch)
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self, batch: list["_Job"]) -> None:
        from .images import load_image

        analyzer = self.get(*batch[0].options)
        started = time.perf_counter()
        images = []
        for job in batch:
            try:
                images.append((job, load_image(job.data)))
            except HowoldError as error:
                job.error, job.done = error, True
        decoded = time.perf_counter()
        try:
            results = analyzer.analyze_many([image for _, image in images]) if images else []
        except BaseException as error:  # noqa: BLE001 - every waiting job hears of it
            for job, _ in images:
                job.error, job.done = error, True
            raise
        timings = dict(getattr(analyzer, "last_timings", {}))
        for (job, image), result in zip(images, results):
            height, width = image.shape[:2]
            if "error" in result:
                job.error = HowoldError(result["error"])
            job.result = {
                "faces": result.get("faces", []),
                "image": {"width": int(width), "height": int(height)},
                "timings_ms": {
                    "decode": round((decoded - started) * 1000 / len(batch), 2),
                    "detect": float(timings.get("detect_ms", 0.0)),
                    "predict": float(timings.get("predict_ms", 0.0)),
                    "batched_with": len(images) - 1,
                },
            }
            job.done = True


@dataclass
class _Job:
    """One upload waiting for the model, and what became of it."""

    data: bytes
    options: tuple
    done: bool = False
    result: Optional[dict] = None
    error: Optional[BaseException] = None


class Admission:
    """At most `limit` jobs running and `queue` waiting; a job keeps its slot until its thread ends."""

    def __init__(self, limit: int, queue: int):
        self.limit, self.queue = limit, queue
        self.in_flight = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(limit)
        self._seconds_per_job = 1.0  # moving average, for Retry-After

    def full(self) -> bool:
        return self._semaphore.locked() and self.waiting >= self.queue

    def retry_after(self) -> int:
        backlog = self.in_flight + self.waiting + 1
        return max(1, min(60, math.ceil(self._seconds_per_job * backlog / self.limit)))

    async def run(self, work: Callable[[], Any], timeout_s: float) -> Any:
        """Run `work` in a thread once admitted; _Busy when the queue is full, _TimedOut past the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._semaphore.locked():
            if self.waiting >= self.queue:
                raise _Busy()
            self.waiting += 1
            try:
                await asyncio.wait_for(self._semaphore.acquire(), timeout_s)
            except asyncio.TimeoutError:
                raise _TimedOut() from None
            finally:
                self.waiting -= 1
        else:
            await self._semaphore.acquire()
        self.in_flight += 1
        job = asyncio.ensure_future(self._job(work))
        try:
            # shield: a timed-out job keeps running (threads cannot be stopped) and keeps its slot
            return await asyncio.wait_for(asyncio.shield(job), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            job.add_done_callback(_log_late_failure)
            raise _TimedOut() from None

    async def _job(self, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return await anyio.to_thread.run_sync(work)
        finally:
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.perf_counter() - started)
            self.in_flight -= 1
            self._semaphore.release()


def _log_late_failure(job: asyncio.Future) -> None:
    if not job.cancelled() and job.exception() is not None and not isinstance(job.exception(), HowoldError):
        logger.error("howold: a timed-out analysis failed later", exc_info=job.exception())


# ---- reading uploads, in memory -------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload larger than the limit of {_size(limit)}")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the upload was interrupted") from None
    return b"".join(chunks)


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The `file` field of a multipart/form-data body (the first one, if repeated)."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data without a boundary")
    parts: list[tuple[bytes, bytearray]] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(name=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if bytes(header["field"]).lower() == b"content-disposition":
            current["name"] = parse_options_header(bytes(header["value"]))[1].get(b"name", b"")
        header["field"], header["value"] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((current["name"], current["data"]))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError, TypeError) as error:
        raise HTTPException(400, f"malformed multipart/form-data body ({error})") from None
    if parser.state != MultipartState.END:  # cut short: no closing boundary (the parser does not complain)
        raise HTTPException(400, "malformed multipart/form-data body (it ends before its closing boundary)")
    for name, data in parts:
        if name == b"file":
            return bytes(data)
    raise HTTPException(422, "the multipart form has no `file` field; send the photo as `file`")


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n:,} bytes"


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ---- the app ---------------------------------------------------------------------------------


#: On 503s while the server stops: come back later, and not on this connection.
STOPPING_HEADERS = {"Retry-After": "5", "Connection": "close"}

STATIC_DIR = Path(__file__).resolve().with_name("static")


def _page() -> str:
    # beside this module rather than importlib.resources.files("face"): with the editable
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
            detector=config.detector if pool.status == "ready" else None,
            in_flight=admission.in_flight if admission else 0,
            queued=admission.waiting if admission else 0,
            detail=pool.error,
        )
        if body.status != "ready":
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "5", "Cache-Control": "no-store"})
        return JSONResponse(body.model_dump(exclude_none=True), headers={"Cache-Control": "no-store"})

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
    ) -> Any:
        if app.state.stopping:
            raise HTTPException(503, "the server is stopping; try again shortly", headers=STOPPING_HEADERS)
        # a request still running when the grace period ends is answered 503 (rather than cut
        # off by uvicorn with a 500); its analysis thread, if any, runs on unwatched
        work = asyncio.ensure_future(analyze_upload(request, detector, tta))
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

    async def analyze_upload(request: Request, detector: Optional[str], tta: list[str]) -> Any:
        started = time.perf_counter()
        admission: Admission = state["admission"]
        if pool.status == "loading":
            raise HTTPException(503, "the model is still loading; try again shortly", headers={"Retry-After": "5"})
        if pool.status == "failed":
            raise HTTPException(500, f"the model failed to load: {pool.error}")

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
        from .analyzer import DEFAULT_TTA  # loaded already: the pool is ready

        augment = tuple(option for option in TTA_CHOICES if option in tta) if tta else DEFAULT_TTA
        try:
            result = await admission.run(lambda: pool.analyze(data, selected, augment), config.request_timeout_s)
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


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining before it shuts down: on the first SIGTERM or Ctrl-C, `app`
    answers new requests 503 while those in flight finish, until none is left or
    `grace_period` seconds have passed; then uvicorn's own shutdown runs. A second signal
    skips the wait."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_period: float):
        super().__init__(config)
        self.app, self.grace_period = app, grace_period
        self.drain_until: Optional[float] = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.drain_until is not None or not self.started:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)  # uvicorn raises it again once shut down: the exit status says why
        self.drain_until = time.monotonic() + self.grace_period
        self.app.state.stopping = True
        logger.info(
            "howold: %s: stopping; %d request(s) in flight finish within %g s, new ones get 503",
            signal.Signals(sig).name, len(self.server_state.tasks), self.grace_period,
        )

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and not self.should_exit:
            over = time.monotonic() - self.drain_until
            if self.server_state.tasks and over >= 0 and not self.app.state.cut.is_set():
                logger.warning("howold: the grace period is over; %d request(s) still in flight get 503", len(self.server_state.tasks))
                self.app.state.cut.set()
            if not self.server_state.tasks or over >= 2:  # 2 s for those 503s to go out
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Optional[list] = None) -> None:
        await super().shutdown(sockets)
        logger.info("howold: stopped; start `howold serve` again to serve again")


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    backbone: str | None = None,
    detector: str = "yunet",
    heads: str | None = None,
    grace_period: float = 25.0,
    **settings: Any,
) -> int:
    """Run the web app with uvicorn until interrupted; each of `workers` processes loads its own model.

    `grace_period`: seconds that requests in flight get to finish after SIGTERM or Ctrl-C
    (keep it below the runtime's kill timeout: Kubernetes waits 30 s, Docker 10 s).
    `settings`: any other WebConfig field (max_upload_bytes, max_concurrent, ...).
    """
    config = WebConfig(backbone=backbone, detector=detector, heads=heads, **settings)
    common = dict(host=host, port=port, limit_concurrency=config.max_connections, log_level="info")
    if workers > 1:
        # worker processes import the app themselves, so the config travels in the environment
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run("face.web:app_from_env", factory=True, workers=workers, timeout_graceful_shutdown=math.ceil(grace_period), **common)
        return 0
    app = create_app(config)
    # the drain is the grace period; uvicorn's own shutdown after it only closes connections
    server = DrainingServer(uvicorn.Config(app, timeout_graceful_shutdown=2, **common), app, grace_period)
    server.run()
    return 0 if server.started else 1
