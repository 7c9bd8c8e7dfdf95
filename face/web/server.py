"""`howold serve`: uvicorn running the app, draining requests in flight before it stops."""
from __future__ import annotations

import math
import os
import signal
import time
from typing import Any, Optional

import uvicorn
from fastapi import FastAPI

from .app import create_app
from .settings import CONFIG_ENV, WebConfig, logger


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
    model: str | None = None,
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
    config = WebConfig(model=model, backbone=backbone, detector=detector, heads=heads, **settings)
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
