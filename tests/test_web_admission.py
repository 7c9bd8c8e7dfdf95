"""The web app's loading state, queue, deadline and upload cut-off, without racing the clock.

Each test runs the real app (`create_app`, a real Analyzer) under a real uvicorn server on
loopback, in this process, so that it can hold the work where it wants it: a `Gate` wraps
the pool's analysis (or its model loading) so that the work starts for real and then waits
until the test opens the gate. What happens meanwhile (504, 503, in-flight and queue
counts) follows from the server's rules alone, not from how fast this machine is.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import socket
import threading
import time
from typing import Callable, Iterator

import pytest

httpx = pytest.importorskip("httpx")

from face.web import MULTIPART_OVERHEAD, WebConfig, create_app  # noqa: E402

from http_server import http_response  # noqa: E402

MiB = 1024 * 1024
LIMIT = 10 * MiB
WAIT_S = 120  # how long a test waits for something that must happen, before it fails
LOAD_WAIT_S = 900  # the same for loading and warming up the model, which a loaded 2-core machine can make slow


def blank_png(size: int = 64) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, "PNG")
    return buffer.getvalue()


def astronaut_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def eventually(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait until `condition()` holds (polling a state, not guessing a duration)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for {what}")
        time.sleep(0.02)


class Gate:
    """Lets calls of a function start, then holds each one until the gate is opened."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.opened = threading.Event()

    def wrap(self, work: Callable) -> Callable:
        def gated(*args, **kwargs):
            self.entered.release()
            if not self.opened.wait(WAIT_S):
                raise TimeoutError("the test never opened the gate")
            return work(*args, **kwargs)

        return gated

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=WAIT_S), "the work never started"


class Server:
    """The app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app, asgi=None):
        import uvicorn

        self.app = app
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(asgi or app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def health(self) -> dict:
        return httpx.get(self.url + "/api/health", timeout=WAIT_S).json()

    def post(self, data: bytes, content_type: str = "image/png", **params) -> httpx.Response:
        return httpx.post(self.url + "/api/analyze", content=data, headers={"content-type": content_type}, params=params, timeout=WAIT_S)


@pytest.fixture(scope="module")
def hog_analyzer():
    """One Analyzer (HOG) for all the servers here: building one costs 5-25 s on a busy machine,
    and each server would otherwise build its own. Each server's start-up still runs the
    pool's real `load` (which finds it built, and warms it up); test_web.py's server builds
    its model from scratch."""
    from face import Analyzer

    return Analyzer(detector="hog")


@contextlib.contextmanager
def running(config: WebConfig, gate_load: Gate | None = None, gate_analysis: Gate | None = None, asgi=None, analyzer=None) -> Iterator[Server]:
    """A started server for `config`, its model ready unless `gate_load` holds the loading.
    `analyzer`: an Analyzer built before, for the config's detector: the server's start-up
    then only warms it up, instead of building its own."""
    app = create_app(config)
    pool = app.state.pool
    if analyzer is not None:
        pool._analyzers[(config.detector, ())] = analyzer
    if gate_load is not None:
        pool.load = gate_load.wrap(pool.load)
    if gate_analysis is not None:
        pool.analyze = gate_analysis.wrap(pool.analyze)
    server = Server(app, asgi(app) if asgi else None)
    server.thread.start()
    try:
        eventually(lambda: server.server.started, "uvicorn to start")
        if gate_load is None:
            eventually(lambda: server.health()["status"] != "loading", "the model to load", LOAD_WAIT_S)
            assert server.health()["status"] == "ready"
        yield server
    finally:
        for gate in (gate_load, gate_analysis):
            if gate is not None:
                gate.opened.set()
        server.server.should_exit = True
        server.thread.join(30)


# ---- loading -------------------------------------------------------------------------------


def test_health_says_loading_until_the_model_is_ready(hog_analyzer):
    gate = Gate()
    with running(WebConfig(detector="hog"), gate_load=gate, analyzer=hog_analyzer) as server:
        gate.wait_entered()  # the model's loading has begun, and waits for us
        early = httpx.get(server.url + "/api/health", timeout=WAIT_S)
        assert early.status_code == 503
        assert early.json()["status"] == "loading"
        assert early.headers["retry-after"].isdigit() and early.headers["cache-control"] == "no-store"
        refused = server.post(blank_png())
        assert refused.status_code == 503 and "loading" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        gate.opened.set()
        eventually(lambda: server.health()["status"] != "loading", "the model to load", LOAD_WAIT_S)
        ready = httpx.get(server.url + "/api/health", timeout=WAIT_S)
        assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["detector"] == "hog"
        assert server.post(blank_png()).status_code == 200


# ---- queue and deadline --------------------------------------------------------------------


def test_full_queue_is_503_with_retry_after(hog_analyzer):
    """One analysis runs, one waits in the queue; the next finds no room until they are done."""
    gate = Gate()
    with running(WebConfig(detector="hog", max_concurrent=1, max_queue=1, request_timeout_s=WAIT_S), gate_analysis=gate, analyzer=hog_analyzer) as server:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running_one = pool.submit(server.post, astronaut_jpeg(), "image/jpeg")
            gate.wait_entered()
            assert server.health()["in_flight"] == 1
            queued_one = pool.submit(server.post, blank_png())
            eventually(lambda: server.health()["queued"] == 1, "the second request to queue")
            refused = server.post(blank_png())
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/json"
            assert int(refused.headers["retry-after"]) >= 1
            assert "try again" in refused.json()["detail"]
            health = server.health()
            assert health["in_flight"] == 1 and health["queued"] == 1
            gate.opened.set()
            first, second = running_one.result(), queued_one.result()
        assert first.status_code == 200 and len(first.json()["faces"]) == 1, first.text
        assert second.status_code == 200 and second.json()["faces"] == []
        assert server.health()["in_flight"] == 0 and server.health()["queued"] == 0
        assert server.post(blank_png()).status_code == 200  # room again


def test_deadline_is_504_and_the_slot_is_held_until_the_work_ends(hog_analyzer):
    gate = Gate()
    config = WebConfig(detector="hog", max_concurrent=1, max_queue=0, request_timeout_s=3.0)
    with running(config, gate_analysis=gate, analyzer=hog_analyzer) as server:
        slow = server.post(astronaut_jpeg(), "image/jpeg")  # held by the gate past its deadline
        assert slow.status_code == 504
        assert "longer than 3 s" in slow.json()["detail"]
        gate.wait_entered()
        # the timed-out analysis still holds its thread, so there is no room yet
        assert server.health()["in_flight"] == 1
        refused = server.post(blank_png())
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        gate.opened.set()
        eventually(lambda: server.health()["in_flight"] == 0, "the timed-out analysis to end")
        quick = server.post(blank_png())
        assert quick.status_code == 200, quick.text


# ---- the upload limit, counted where the app reads it ----------------------------------------


def counting(app, received: list[int]):
    """The app, with the request body bytes it takes from the server counted."""

    async def counted(scope, receive, send):
        async def counting_receive():
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
            return message

        await app(scope, counting_receive, send)

    return counted


@pytest.fixture(scope="module")
def counted(hog_analyzer) -> Iterator[tuple[Server, list[int]]]:
    """A server with default limits whose app counts the body bytes it takes; the tests reset the count."""
    received = [0]
    with running(WebConfig(detector="hog"), asgi=lambda app: counting(app, received), analyzer=hog_analyzer) as server:
        yield server, received


def test_chunked_upload_is_cut_off_at_the_limit(counted):
    """Chunked (no declared length): the app stops taking the body once it passes the limit."""
    server, received = counted
    received[0] = 0
    piece = b"\x00" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")

        def send_forever():  # 4x the limit, or until the server hangs up
            with contextlib.suppress(OSError):
                for _ in range(4 * LIMIT // len(piece)):
                    sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")

        sender = threading.Thread(target=send_forever, daemon=True)
        sender.start()
        status, _, body = http_response(sock, WAIT_S)
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(WAIT_S)
    assert status == 413
    assert "limit" in json.loads(body)["detail"]
    # it read up to the limit, then stopped: at most one more read's worth of bytes
    assert LIMIT < received[0] <= LIMIT + 1 * MiB, received[0]


def test_multipart_file_just_over_the_limit_is_413(counted):
    """The body passes the multipart allowance, but the file in it is 1,000 bytes too big."""
    server, received = counted
    received[0] = 0
    photo = astronaut_jpeg()
    over = photo + b"\x00" * (LIMIT + 1000 - len(photo))  # a readable JPEG with trailing bytes
    response = httpx.post(server.url + "/api/analyze", files={"file": ("a.jpg", over, "image/jpeg")}, timeout=WAIT_S)
    assert response.status_code == 413, response.text
    assert "10 MiB" in response.json()["detail"]
    assert LIMIT < received[0] <= LIMIT + MULTIPART_OVERHEAD  # read whole (within the allowance), then refused
    at_limit = photo + b"\x00" * (LIMIT - len(photo))
    accepted = httpx.post(server.url + "/api/analyze", files={"file": ("a.jpg", at_limit, "image/jpeg")}, timeout=WAIT_S)
    assert accepted.status_code == 200, accepted.text
    assert len(accepted.json()["faces"]) == 1
