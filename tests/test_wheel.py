"""The wheel a user builds (`python -m build --wheel`) holds the shipped weights, and installed
by its file name into a new virtual environment, without extras, it runs `howold demo` with no
network: no TensorFlow, nothing downloaded at run time.

It installs the wheel's dependencies from the package index (or pip's cache), which takes a
minute or two: it runs where HOWOLD_TEST_WHEEL=1 is set, as in CI (`.ci/run`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OBAMA = ROOT.parent / "shared" / "demo" / "obama_family_2011.jpg"
#: What `pip install .` must leave out (the "train" extra brings them).
TRAINING_PACKAGES = ("tensorflow", "keras", "h5py", "tensorboard")

pytestmark = pytest.mark.skipif(
    os.environ.get("HOWOLD_TEST_WHEEL") != "1",
    reason="builds the wheel and installs it with its dependencies from the package index (1-2 min): set HOWOLD_TEST_WHEEL=1",
)


def source_tree(destination: Path) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) without its virtual
    environments and build folders, links kept as links (face/weights is one)."""
    pytest.importorskip("build", reason='the build package is missing: pip install -e ".[test]"')
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs git and the repository's .git to list its files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in sorted(set(filter(None, listed.decode().split("\0")))):
        source, target = ROOT / name, destination / name
        if not source.exists() and not source.is_symlink():  # deleted in the working tree
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def offline(command: list[str]) -> list[str]:
    """`command` in a network namespace of its own (no network at all) where Linux allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn", *command]
    return command


def test_the_wheel_holds_the_weights_and_runs_the_demo_offline_without_extras(tmp_path):
    started = time.monotonic()
    source = source_tree(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("howold-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"face/weights/{p.name}" for p in (ROOT / "weights").iterdir() if p.is_file() and p.suffix != ".py"}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"face/assets/astronaut.png", "face/static/index.html"} <= names
    built_at = time.monotonic()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True, env=without_pythonpath())
    assert install.returncode == 0, install.stderr[-3000:]
    installed_at = time.monotonic()
    found = subprocess.run(
        [str(python), "-c", f"import importlib.util as u; print([n for n in {TRAINING_PACKAGES!r} if u.find_spec(n)])"],
        capture_output=True, text=True, cwd=tmp_path, env=without_pythonpath(),
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr

    env = {**without_pythonpath(), "HOWOLD_HOME": str(tmp_path / "home")}  # an empty cache: nothing there to use
    demo = subprocess.run(offline([str(venv / "bin" / "howold"), "demo", "--output-dir", str(tmp_path / "out")]), capture_output=True, text=True, cwd=tmp_path, env=env)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert len(json.loads(demo.stdout)["faces"]) == 1 and (tmp_path / "out" / "astronaut_howold.jpg").is_file()
    assert [line for line in demo.stderr.splitlines() if line.strip() and not line.startswith("howold:")] == [], demo.stderr
    if OBAMA.is_file():  # a real group photo where ../shared is here
        photo = subprocess.run(offline([str(venv / "bin" / "howold"), "analyze", str(OBAMA), "--json", str(tmp_path / "obama.json")]), capture_output=True, text=True, cwd=tmp_path, env=env)
        assert photo.returncode == 0, photo.stderr[-3000:]
        assert json.loads((tmp_path / "obama.json").read_text())[0]["faces"]
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    print(
        f"wheel {wheel.stat().st_size / 2**20:.1f} MiB, environment {size / 2**20:.0f} MiB; built in {built_at - started:.0f} s, installed in {installed_at - built_at:.0f} s, "
        f"demo in {time.monotonic() - installed_at:.0f} s"
    )
