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

The parts: `settings` (WebConfig and limits), `schemas` (the documented JSON shapes), `pool`
(the shared model and admission control), `uploads` (reading bodies in memory), `app` (the
ASGI app) and `server` (uvicorn, draining on SIGTERM).
"""
from __future__ import annotations

from .app import STATIC_DIR, app_from_env, create_app
from .pool import Admission, AnalyzerPool
from .server import DrainingServer, serve
from .settings import CNN_OPTIONS, CONFIG_ENV, DETECTOR_CHOICES, MULTIPART_OVERHEAD, TTA_CHOICES, MiB, WebConfig

__all__ = [
    "Admission",
    "AnalyzerPool",
    "CNN_OPTIONS",
    "CONFIG_ENV",
    "DETECTOR_CHOICES",
    "DrainingServer",
    "MULTIPART_OVERHEAD",
    "MiB",
    "STATIC_DIR",
    "TTA_CHOICES",
    "WebConfig",
    "app_from_env",
    "create_app",
    "serve",
]
