"""The models, shared by the requests of one process: `AnalyzerPool` (one analyzer per
model and detector, uploads waiting for the model analysed in one batch) and `Admission` (at most
`max_concurrent` analyses running, `max_queue` waiting, each with a deadline)."""
from __future__ import annotations

import asyncio
import copy
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import anyio

from ..errors import ConfigError, HowoldError
from .settings import CNN_OPTIONS, WebConfig, logger


class _Busy(Exception):
    pass


class _TimedOut(Exception):
    pass


class AnalyzerPool:
    """The analyzers of one process: one per model and detector (built lazily); models on
    the same backbone share it.

    Model None is the server's own (WebConfig's model, or its heads and backbone); another
    is a name from the catalogue (`face.catalogue`). Test-time augmentation variants are
    shallow copies of an analyzer with another `tta`, so they share its networks and its
    lock. Inference goes through one process-wide lock, since they may share a backbone.
    """

    def __init__(self, config: WebConfig):
        self.config = config
        self.status = "loading"
        self.error: Optional[str] = None
        self.backbone_name: Optional[str] = None
        self.default_model: Optional[str] = None  # the server's model's name, once loaded
        self._catalogue: Optional[list] = None
        self._analyzers: dict[tuple, Any] = {}  # (detector, tta) for the server's own model, (detector, tta, name) for another
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
        self.backbone_name, self.default_model = analyzer.backbone.name, analyzer.model_name
        self.status = "ready"
        logger.info("howold: model %s ready (backbone %s, detector %s) in %.1f s", self.default_model, self.backbone_name, self.config.detector, time.perf_counter() - started)

    def catalogue(self) -> list:
        """The models a request may choose (read once): the catalogue's, and the server's own
        model where it is a file outside it (HowoldError: a model file cannot be read)."""
        if self._catalogue is not None:
            return self._catalogue
        from ..catalogue import list_models, read_entry

        models = list_models()
        own = self._analyzers.get((self.config.detector, ()))
        if own is not None and own.model_name not in {entry.name for entry in models}:
            models.append(read_entry(own.heads.path))
        if self.status == "ready":  # the server's own model is known
            self._catalogue = models
        return models

    def model_key(self, name: Optional[str]) -> Optional[str]:
        """The pool's key of the model called `name`: None for the server's own (or no name);
        a ConfigError naming the known models for an unknown one."""
        if name is None or name == self.default_model:
            return None
        known = [entry.name for entry in self.catalogue()]
        if name not in known:
            raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(known)}")
        return name

    def get(self, detector: str, tta: tuple[str, ...], model: Optional[str] = None):
        key = (detector, tta) if model is None else (detector, tta, model)
        analyzer = self._analyzers.get(key)
        if analyzer is not None:
            return analyzer
        with self._build_lock:
            if key in self._analyzers:
                return self._analyzers[key]
            if tta:
                analyzer = copy.copy(self.get(detector, (), model))
                analyzer.tta = tta
            else:
                from ..analyzer import Analyzer

                options = CNN_OPTIONS if detector == "cnn" else {}
                if model is None:
                    choice = dict(model=self.config.model, heads=self.config.heads, backbone=self._shared_backbone(None) or self.config.backbone)
                else:
                    choice = dict(model=model, backbone=self._shared_backbone(next(e.backbone for e in self.catalogue() if e.name == model)))
                analyzer = Analyzer(detector=detector, tta=(), **choice, **options)
            self._analyzers[key] = analyzer
            return analyzer

    def _shared_backbone(self, name: Optional[str]):
        """A backbone already loaded to share: the one called `name`, or (None) the server's
        own model's; None when there is none yet."""
        for key, analyzer in self._analyzers.items():
            if (analyzer.backbone.name == name) if name is not None else len(key) == 2:
                return analyzer.backbone
        return None

    def analyze(self, data: bytes, detector: str, tta: tuple[str, ...], model: Optional[str] = None) -> dict:
        """Decode and analyse one upload (blocking). Raises ImageError for a bad image.

        Uploads that wait for the model are analysed together: whichever thread gets the
        model lock takes every waiting upload with the same options, and their faces go
        through the network in one batch (bigger batches use the cores better). Decoding
        runs under the lock too: on a small machine a decode beside an inference only
        slows TensorFlow's threads down.
        """
        job = _Job(data, (detector, tta, model))
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
        from ..images import load_image

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
                "model": analyzer.model_name,
                "model_id": analyzer.model_id,
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
