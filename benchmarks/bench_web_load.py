"""Load test of the web API: latency, throughput, errors and the server's memory growth.

Starts `uvicorn face.web:app_from_env --factory` on loopback with the default WebConfig
(4 uploads admitted and batched, 8 queued), warms it up, sends `--serial` requests from one client in
a loop (the serial throughput), then N requests from C client threads with a real photo,
and reports errors, p50/p95 latency, throughput against the serial one, and the server's
RSS before and after the load.

    python benchmarks/bench_web_load.py                    # 200 requests, 8 clients, the astronaut
    python benchmarks/bench_web_load.py --image family.jpg --requests 500 --json out.json
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def astronaut_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux) or psutil."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def request(url: str, data: bytes | None = None, timeout: float = 120) -> tuple[int, bytes]:
    headers = {"Content-Type": "image/jpeg"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            status, body = request(url + "/api/health", timeout=5)
            if status == 200 and json.loads(body)["status"] == "ready":
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("server not ready in time")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--serial", type=int, default=50, help="requests from one client first, for the serial throughput")
    parser.add_argument("--image", type=Path, default=None, help="photo to send (default: scikit-image's astronaut)")
    parser.add_argument("--config", default=None, help="WebConfig as JSON (default: the defaults)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    image = args.image.read_bytes() if args.image else astronaut_jpeg()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if args.config:
        env["HOWOLD_WEB_CONFIG"] = args.config
    log = tempfile.TemporaryFile()
    command = [sys.executable, "-m", "uvicorn", "face.web:app_from_env", "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    started = time.perf_counter()
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, server)
        load_s = time.perf_counter() - started
        rss_ready = rss_mib(server.pid)
        for _ in range(args.warmup):
            status, body = request(url + "/api/analyze", image)
            if status != 200:
                raise SystemExit(f"warm-up request failed: {status} {body[:200]!r}")
        faces = len(json.loads(body)["faces"])
        t0 = time.perf_counter()
        for _ in range(args.serial):
            status, body = request(url + "/api/analyze", image)
            if status != 200:
                raise SystemExit(f"serial request failed: {status} {body[:200]!r}")
        serial_rps = args.serial / (time.perf_counter() - t0)
        rss_before = rss_mib(server.pid)

        latencies: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()

        def one(_: int) -> None:
            t0 = time.perf_counter()
            try:
                status, _body = request(url + "/api/analyze", image)
            except OSError:
                status = -1  # connection error
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
        rss_after = rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()

    errors = sum(count for status, count in statuses.items() if status != 200)
    result = {
        "requests": args.requests,
        "clients": args.clients,
        "image_bytes": len(image),
        "faces_per_image": faces,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "throughput_rps": round(args.requests / wall, 2),
        "serial_rps": round(serial_rps, 2),
        "throughput_vs_serial": round(args.requests / wall / serial_rps, 2),
        "p95_over_p50": round(percentile(latencies, 0.95) / percentile(latencies, 0.50), 2),
        "wall_s": round(wall, 1),
        "model_load_s": round(load_s, 1),
        "rss_ready_mib": round(rss_ready, 1),
        "rss_before_mib": round(rss_before, 1),
        "rss_after_mib": round(rss_after, 1),
        "rss_growth_pct": round((rss_after - rss_before) / rss_before * 100, 1),
        "cpus": os.cpu_count(),
    }
    print(f"{args.requests} requests from {args.clients} clients, {len(image):,}-byte JPEG with {faces} face(s)")
    print(f"errors: {errors}  statuses: {result['statuses']}")
    print(f"latency: p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  max {result['max_ms']} ms")
    print(f"latency: p95/p50 {result['p95_over_p50']}")
    print(f"throughput: {result['throughput_rps']} requests/s over {result['wall_s']} s; one client in a loop: {result['serial_rps']} requests/s; ratio {result['throughput_vs_serial']}")
    print(f"server RSS: ready {result['rss_ready_mib']} MiB, before load {result['rss_before_mib']} MiB, after {result['rss_after_mib']} MiB ({result['rss_growth_pct']:+.1f}%)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
