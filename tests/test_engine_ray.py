"""The Ray engine on a real local Ray (2 CPUs, started once for the module, stopped after):
the same answers as the local engine on about 50 images, errors on their own lines, and a
second driver joining the cluster by its address to resume a torn results file."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from face.cli import main

try:
    from photo_folder import assert_same_results, read_jsonl
except ImportError:  # run from the repository root as a package
    from tests.photo_folder import assert_same_results, read_jsonl

ray = pytest.importorskip("ray", reason='the ray extra is not installed (pip install -e ".[ray]")')

DETECTION = ["--detector", "hog", "--upsample", "0"]


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A Ray of 2 CPUs started here; a driver in this process, others join by the address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def local_results(photo_results) -> list[dict]:
    return photo_results


def test_ray_engine_gives_the_local_answers(ray_address, photos, local_results, tmp_path, capsys):
    output = tmp_path / "ray.jsonl"
    code = main(["analyze", str(photos[0].parent), "--output", str(output), "--engine", "ray", "--batch-size", "4", "--actors", "2", *DETECTION])
    assert code == 1  # the broken files
    assert_same_results(read_jsonl(output), local_results, tolerance=1e-4)
    assert sum("error" in r for r in read_jsonl(output)) == 3
    assert f"{len(photos)} images, {len(photos) - 4} faces, 3 errors," in capsys.readouterr().err
    assert ray.is_initialized()  # the engine leaves alone a Ray it did not start


def test_a_second_driver_joins_by_address_and_resumes(ray_address, photos, local_results, tmp_path):
    output = tmp_path / "ray.jsonl"
    kept = local_results[:20]
    output.write_text("".join(json.dumps(r) + "\n" for r in kept) + json.dumps(local_results[20])[:30])  # torn last line
    command = [
        sys.executable, "-m", "face.cli", "analyze", str(photos[0].parent), "--output", str(output),
        "--engine", "ray", "--ray-address", ray_address, "--actors", "1", "--batch-size", "8", *DETECTION,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 1, done.stderr[-3000:]
    lines = read_jsonl(output)
    assert lines[:20] == kept
    assert_same_results(lines, local_results, tolerance=1e-4)
    assert f"{len(photos) - 20} images (20 already in {output})" in done.stderr


def test_an_actor_that_cannot_start_gives_one_line(ray_address, photos, tmp_path, capsys):
    some = [str(p) for p in photos[-3:]]
    code = main(["analyze", *some, "--output", str(tmp_path / "r.jsonl"), "--engine", "ray", "--actors", "1", "--heads", str(tmp_path / "missing.keras"), *DETECTION])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"howold: error: ray: {tmp_path / 'missing.keras'}: no trained heads")
    assert (tmp_path / "r.jsonl").read_text() == ""  # nothing marked done
