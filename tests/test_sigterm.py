"""`howold serve` stopped by SIGTERM, as a container runtime stops it: the real command in its
own process on 127.0.0.1. A request in flight finishes with its answer; a new one gets 503
(or, once the server has closed, a refused connection); the server then ends by itself and
says so. (SIGTERM for `howold analyze --output` is in test_faults.py.)

The request is held in flight without racing the clock: it asks for `100 Continue`, which
the server sends only once the app is reading its body; the test sends the body after the
SIGTERM.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

httpx = pytest.importorskip("httpx")

from http_server import http_response, unused_port  # noqa: E402
from test_web_admission import LOAD_WAIT_S, WAIT_S, astronaut_jpeg, eventually  # noqa: E402


def health(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url + "/api/health", timeout=WAIT_S)
    except httpx.TransportError:
        return None


@contextlib.contextmanager
def serving(tmp_path, grace_period: int):
    """A real `howold serve` on an unused port, ready; killed at the end whatever happens.
    Yields (url, port, server, log path)."""
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "face.cli", "serve", "--detector", "hog", "--port", str(port), "--grace-period", str(grace_period)]
    with open(log, "w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        def ready() -> bool:
            assert server.poll() is None, log.read_text()[-3000:]
            response = health(url)
            return response is not None and response.status_code == 200

        eventually(ready, "the server's model to load", LOAD_WAIT_S)
        yield url, port, server, log
    finally:
        server.kill()
        server.wait()


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(tmp_path):
    with serving(tmp_path, 600) as (url, port, server, log):
        photo = astronaut_jpeg()
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as slow:
            slow.sendall(
                b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(photo)
            )
            assert slow.recv(1024).startswith(b"HTTP/1.1 100 Continue"), "the app is reading the upload"
            slow.sendall(photo[:1000])

            server.send_signal(signal.SIGTERM)
            eventually(lambda: health(url).status_code == 503, "the server to say it is stopping")
            stopping = health(url)
            assert stopping.json()["status"] == "stopping" and stopping.headers["retry-after"].isdigit()
            refused = httpx.post(url + "/api/analyze", content=photo, headers={"content-type": "image/jpeg"}, timeout=WAIT_S)
            assert refused.status_code == 503 and refused.headers["connection"] == "close"
            assert refused.json()["detail"] == "the server is stopping; try again shortly"
            assert server.poll() is None, "it waits for the request in flight"

            slow.sendall(photo[1000:])
            status, _, body = http_response(slow, WAIT_S)
        assert status == 200, body
        assert len(json.loads(body)["faces"]) == 1
        code = server.wait(WAIT_S)  # it ends by itself once nothing is in flight, long before the 600 s
    assert code == -signal.SIGTERM, "it ends as SIGTERM asked, after the drain"
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "howold: SIGTERM: stopping; 1 request(s) in flight finish within" in text
    assert "howold: stopped; start `howold serve` again to serve again" in text
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/health", timeout=5)


def test_a_request_still_in_flight_after_the_grace_period_gets_503(tmp_path):
    with serving(tmp_path, 3) as (url, port, server, log):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as stuck:
            stuck.sendall(b"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
            assert stuck.recv(1024).startswith(b"HTTP/1.1 100 Continue")
            server.send_signal(signal.SIGTERM)  # the body never comes
            code = server.wait(WAIT_S)
            status, headers, body = http_response(stuck, WAIT_S)
    assert code == -signal.SIGTERM
    assert status == 503 and headers["connection"] == "close", body
    assert json.loads(body)["detail"] == "the server stopped before this request was done; try again"
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "howold: the grace period is over; 1 request(s) still in flight get 503" in text
    assert "howold: stopped;" in text
