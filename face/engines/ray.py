"""The Ray engine: Ray Data runs an actor pool of Analyzers over the sources.

`ray.data.from_items(sources)` is mapped in batches by `AnalyzeBatch`, a callable class:
each actor builds one Analyzer (the models load once per actor) and returns a batch's
results as JSON lines, which the driver receives as they finish (not in source order).
Without an address Ray starts on this machine; with one it joins that cluster, whose
every node must have howold installed and see the image paths.

Faults, and the settings the engine relies on:
- An actor that dies (kill -9, out of memory, a lost node): Ray Data gives the actors of a
  pool `max_restarts=-1`, so Ray restarts one as often as needed, and `max_task_retries=-1`,
  so the batch it held runs again (on the restarted actor or another one). These are Ray
  Data's defaults (its `ActorPoolMapOperator`; `map_batches` would take them only through
  `ray_remote_args`, which Ray 2.60 warns is to go in 2.64), so they are not passed here;
  tests/test_engine_ray.py kills an actor mid-run to keep them so. The run goes on by
  itself and gives every image once: a batch's results reach the driver only when the
  batch is finished.
- A batch whose analysis raises (not because of one image, which gets its own error line):
  Ray Data does not retry exceptions of the batch function (`actor_task_retry_on_errors`
  stays False), so `AnalyzeBatch` turns it into one error line per image, naming the
  cause and marked `"retry": true`; the next run of the same command tries them again.
- An actor that cannot start (a missing heads file) ends the run with one error line, as
  Ray Data gives up after `max_consecutive_actor_init_deaths` deaths in a row.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, HowoldError
from .base import Engine, failed_batch

MISSING_RAY = 'the ray engine needs Ray: pip install "howold[ray]"'


@dataclass(frozen=True)
class RayOptions:
    """address: a cluster to join (None: start Ray here with `local_cpus` CPUs, default all).
    actors: pool size (None: as many as the cluster's CPUs, or GPUs, allow per actor)."""

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    local_cpus: int | None = None
    worker_logs: bool = False  # the actors' own log lines on this terminal (they are in Ray's log files anyway)


class AnalyzeBatch:
    """One Analyzer per actor; a batch {"source": [...]} -> {"source", "result": JSON lines}.
    A batch whose analysis raises gets `failed_batch` lines (retried by the next run)."""

    def __init__(self, analyzer_options: Mapping[str, Any], batch_size: int, crop: bool):
        from ..analyzer import Analyzer

        self.batch_size, self.crop = batch_size, crop
        try:
            self.analyzer, self.error = Analyzer(**analyzer_options), None
        except HowoldError as error:  # raised from the first batch: Ray prints a failed actor's traceback, not a task's
            self.analyzer, self.error = None, error

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        sources = [str(source) for source in batch["source"]]
        try:
            results = list(self.analyzer.analyze_stream(sources, self.batch_size, self.crop))
        except Exception as error:  # noqa: BLE001 - the batch's images get error lines; the run goes on
            results = failed_batch(sources, error)
        lines = [json.dumps(result) for result in results]
        return {"source": np.array(sources, dtype=object), "result": np.array(lines, dtype=object)}


def _root_cause(error: BaseException) -> str:
    """One line for a Ray failure: the howold error an actor raised (a missing heads file on
    a worker node, say), else the last line of Ray's message."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, HowoldError):
            return str(current)
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        match = re.match(r"face\.errors\.\w+: (.*)", line)
        if match:
            return match.group(1)
    return lines[-1] if lines else type(error).__name__


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the "data" extra
    except ImportError:
        raise ConfigError(MISSING_RAY) from None
    return ray


class RayEngine(Engine):
    name = "ray"
    ordered = False

    def __init__(self, options: RayOptions = RayOptions()):
        self.options = options
        self.ray = _import_ray()
        self._started = False

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        settings = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=self.options.worker_logs)
        # ray.init replaces this process's SIGTERM handler (with sys.exit, and a native one that
        # prints a stack); the one found is put back, so that SIGTERM stops the run as the caller set
        in_main = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if in_main else None
        try:
            if self.options.address:
                ray.init(address=self.options.address, **settings)
            else:
                ray.init(num_cpus=self.options.local_cpus or os.cpu_count(), **settings)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = self.options.address or "a local Ray"
            raise HowoldError(f"ray: cannot start or join {where}: {' '.join(str(error).split())}") from None
        finally:
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        self._started = True

    def pool_size(self) -> int:
        """The actor pool's size: the option, or what the cluster's resources hold."""
        if self.options.actors:
            return self.options.actors
        resources = self.ray.cluster_resources()
        if self.options.gpus_per_actor > 0:
            size = int(resources.get("GPU", 0) // self.options.gpus_per_actor)
            if size < 1:
                raise HowoldError(f"ray: the cluster has {resources.get('GPU', 0):g} GPUs, an actor wants {self.options.gpus_per_actor:g}")
            return size
        return max(1, int(resources.get("CPU", 1) // self.options.cpus_per_actor))

    def run_batches(self, sources: Sequence[str], analyzer_options: Mapping[str, Any], batch_size: int = 32, crop: bool = False) -> Iterator[list[dict]]:
        if not sources:
            return
        self._connect()
        ray = self.ray
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI draws its own
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failure ends as one howold line
        dataset = ray.data.from_items([{"source": str(source)} for source in sources]).map_batches(
            AnalyzeBatch,
            fn_constructor_kwargs={"analyzer_options": dict(analyzer_options), "batch_size": batch_size, "crop": crop},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.pool_size()),
            num_cpus=self.options.cpus_per_actor,
            num_gpus=self.options.gpus_per_actor,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):  # one block: one batch
                yield [json.loads(line) for line in batch["result"]]
        except ray.exceptions.RayError as error:
            raise HowoldError(f"ray: {_root_cause(error)}") from None

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False
