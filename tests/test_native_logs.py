"""Only howold's lines on the terminal: `howold train`, `analyze` and `serve`, each run as a user
runs it (its own process), print no TensorFlow, absl, oneDNN, ONNX Runtime or OpenCV line,
whatever TF_CPP_MIN_LOG_LEVEL the user's environment holds and whichever instruction set oneDNN
uses (`ONEDNN_MAX_CPU_ISA` takes this CPU down to AVX2 only, or AVX-512 without VNNI);
`--verbose` lets them through."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_utkface_folder

ROOT = Path(__file__).resolve().parents[1]
#: oneDNN's instruction sets: AVX2 only, AVX-512 without VNNI, and whatever this CPU has.
ISAS = ["AVX2", "AVX512_CORE", None]
#: A tqdm progress bar (howold's own, on stderr), e.g. "features:  50%|#####     | 8/16 [00:02<00:02, 3.9img/s]".
PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+")
#: The native libraries' line formats: absl/glog ("E0000 00:00:1796341411.286634 5816 util.cc:131]"),
#: absl's warning before its initialisation, TensorFlow's and oneDNN's notices, ONNX Runtime's
#: ("[W:onnxruntime:...") and OpenCV's ("[ WARN:0@0.9] global ...").
NATIVE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::|tensorflow|oneDNN|onednn|cpu_feature_guard|:onnxruntime:|^\[ ?(WARN|ERROR|INFO):\d")


def foreign_lines(stderr: str, allowed: re.Pattern | None = None) -> list[str]:
    """stderr's lines that are neither howold's ("howold: ...") nor a progress bar (nor `allowed`)."""
    lines = [line.strip() for line in re.split(r"[\r\n]", stderr)]
    return [
        line for line in lines
        if line and not line.startswith("howold:") and not PROGRESS_BAR.search(line) and not (allowed and allowed.match(line))
    ]


def native_lines(output: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", output) if NATIVE.search(line)]


def environment(isa: str | None, **extra: str) -> dict[str, str]:
    """This environment with `TF_CPP_MIN_LOG_LEVEL=0` (TensorFlow's most talkative, as a user may
    have it) and oneDNN held to `isa`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "GLOG_minloglevel", "ONEDNN_MAX_CPU_ISA")}
    env.update(TF_CPP_MIN_LOG_LEVEL="0", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def howold(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "face.cli", *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.open(ROOT / "face" / "assets" / "astronaut.png").save(path)
    return path


@pytest.mark.parametrize(("runtime", "isa"), [("onnx", None)] + [("keras", isa) for isa in ISAS])
def test_analyze_prints_only_howolds_lines(photo, tmp_path, runtime, isa):
    """The ONNX path (ONNX Runtime and OpenCV; no oneDNN) and the Keras one (TensorFlow and
    oneDNN loaded)."""
    result = howold("analyze", str(photo), "--runtime", runtime, "--json", str(tmp_path / "r.json"), "--output-dir", str(tmp_path), env=environment(isa))
    assert result.returncode == 0, result.stderr[-3000:]
    assert foreign_lines(result.stderr) == [], result.stderr[-3000:]
    assert native_lines(result.stdout) == []
    assert len(json.loads((tmp_path / "r.json").read_text())[0]["faces"]) == 1


def test_a_model_without_an_onnx_file_is_translated_quietly(photo, tmp_path):
    """`--model dlib-resnet` (heads on dlib's descriptors, no exported file) is translated to
    ONNX through Keras at load: TensorFlow is imported on the way and must stay quiet too."""
    result = howold("analyze", str(photo), "--model", "dlib-resnet", "--json", str(tmp_path / "r.json"), "--output-dir", str(tmp_path), env=environment(None))
    assert result.returncode == 0, result.stderr[-3000:]
    assert foreign_lines(result.stderr) == [], result.stderr[-3000:]
    assert len(json.loads((tmp_path / "r.json").read_text())[0]["faces"]) == 1


def test_verbose_lets_the_native_lines_through(photo, tmp_path):
    """What the checks above look for is there to be found: with --verbose the same analysis
    shows TensorFlow's and oneDNN's own lines."""
    result = howold("analyze", str(photo), "--runtime", "keras", "--verbose", "--output-dir", str(tmp_path), env=environment(None))
    assert result.returncode == 0, result.stderr[-3000:]
    assert native_lines(result.stderr) and foreign_lines(result.stderr)


@pytest.mark.parametrize("isa", ["AVX2", None])
def test_training_with_unfreezing_prints_only_howolds_lines(tmp_path, isa):
    """Training the heads, then unfreezing the top of the network, where TensorFlow checks which
    number formats oneDNN supports on this CPU (and on one without AVX512-FP16 says so in an
    error line, unless held back). Keras's epoch bars are on stdout."""
    data = make_utkface_folder(tmp_path / "utk", 16, seed=3)
    result = howold(
        "train", "--data", str(data), "--output", str(tmp_path / "ft.keras"), "--logs", str(tmp_path / "logs"),
        "--batch-size", "8", "--views", "2", "--epochs", "1", "--unfreeze", "1", "--unfreeze-epochs", "1",
        env=environment(isa, HOWOLD_HOME=str(tmp_path / "home")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert foreign_lines(result.stderr) == [], result.stderr[-3000:]
    assert native_lines(result.stdout) == [], result.stdout[-3000:]
    assert (tmp_path / "ft.keras").is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_prints_only_howolds_and_uvicorns_lines(photo, tmp_path):
    """The web app answers one photo and stops on SIGTERM; its terminal holds uvicorn's own
    server lines ("INFO:     ...") and nothing from the native libraries."""
    import httpx

    port = free_port()
    with (tmp_path / "stderr").open("w+") as stderr, (tmp_path / "stdout").open("w+") as stdout:
        server = subprocess.Popen(
            [sys.executable, "-m", "face.cli", "serve", "--port", str(port)], stdout=stdout, stderr=stderr, env=environment(None),
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                assert server.poll() is None, (tmp_path / "stderr").read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
            with photo.open("rb") as file:
                answer = httpx.post(f"http://127.0.0.1:{port}/api/analyze", files={"file": file}, timeout=120)
            assert answer.status_code == 200 and len(answer.json()["faces"]) == 1
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        err, out = (tmp_path / "stderr").read_text(), (tmp_path / "stdout").read_text()
    assert foreign_lines(err, allowed=re.compile(r"(INFO|WARNING): ")) == [], err
    assert native_lines(err) == [] and native_lines(out) == [], err + out
