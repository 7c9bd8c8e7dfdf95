"""A real HTTP server on 127.0.0.1 for download tests, serving files from a folder.

Routes, for a file NAME in the folder:
  /files/NAME      the whole file with an honest Content-Length
  /truncated/NAME  Content-Length of the whole file, then half the bytes and a closed connection
  /nolength/NAME   half the bytes, no Content-Length (only an expected size can catch it)
Anything else is a 404.

Also `http_response`, for web tests that speak HTTP over a raw socket.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest


class FileServer:
    """A running server; `url(name, route)` gives the address of a file in `root`."""

    def __init__(self, root: Path, port: int):
        self.root = root
        self.port = port
        self.requests: list[str] = []

    def url(self, name: str, route: str = "files") -> str:
        return f"http://127.0.0.1:{self.port}/{route}/{name}"


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the connection closes after each response

        def do_GET(self) -> None:
            server.requests.append(self.path)
            parts = self.path.strip("/").split("/", 1)
            path = server.root / parts[1] if len(parts) == 2 else None
            if path is None or parts[0] not in {"files", "truncated", "nolength"} or not path.is_file():
                self.send_error(404, "Not Found")
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if parts[0] != "nolength":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if parts[0] == "files" else body[: len(body) // 2])
            self.wfile.flush()

        def log_message(self, format: str, *args) -> None:  # keep pytest output clean
            pass

    return Handler


@contextlib.contextmanager
def serve_files(root: Path) -> Iterator[FileServer]:
    """Serve `root` from a thread for the duration of the block."""
    server = FileServer(Path(root), 0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A server for a fresh folder; tests write the files they want served into `.root`."""
    root = tmp_path / "served"
    root.mkdir()
    with serve_files(root) as server:
        yield server


def http_response(sock: socket.socket, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length from a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return status, headers, body
