"""The Ray engine on a real local Ray (2 CPUs, started once for the module, stopped after):
the same answers as the local engine on about 50 images, errors on their own lines, a
second driver joining the cluster by its address to resume a torn results file, and an
actor killed (kill -9) mid-run, which the run survives by itself."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def alive_map_workers() -> list[dict]:
    """The Ray Data actors of this test's cluster, from its GCS (the public state API needs the
    dashboard, which the fixture does not start)."""
    from ray._private import state

    actors = state.actors(actor_state_name="ALIVE").values()
    return [actor for actor in actors if "MapWorker" in actor["ActorClassName"]]


def test_an_actor_killed_mid_run_is_restarted_and_the_run_ends_by_itself(ray_address, photos, local_results, tmp_path):
    """kill -9 of one of two actors: Ray restarts it and runs its batch again (the engine's
    max_restarts=-1, max_task_retries=-1); exit 0, every image exactly once, no rerun."""
    folder = tmp_path / "good"
    folder.mkdir()
    good = [p for p in photos if p.name.startswith("photo_")]
    for path in good:
        (folder / path.name).symlink_to(path)
    expected = [{**r, "source": str(folder / Path(r["source"]).name)} for r in local_results if Path(r["source"]) in good]
    output, log = tmp_path / "ray.jsonl", tmp_path / "stderr.txt"
    command = [
        sys.executable, "-m", "face.cli", "analyze", str(folder), "--output", str(output),
        "--engine", "ray", "--ray-address", ray_address, "--actors", "2", "--batch-size", "2", *DETECTION,
    ]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.monotonic() + 300
        while not (output.exists() and output.read_bytes().count(b"\n") >= 6 and len(alive_map_workers()) == 2):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no results after 300 s"
            time.sleep(0.2)
        victim = alive_map_workers()[0]
        os.kill(victim["Pid"], signal.SIGKILL)
        written = output.read_bytes().count(b"\n")
        code = process.wait(timeout=600)
    finally:
        process.kill()
        process.wait()
    err = log.read_text()
    assert code == 0, err[-3000:]
    assert written < len(good), "killed mid-run"
    lines = read_jsonl(output)
    assert len(lines) == len(good)
    assert_same_results(lines, expected, tolerance=1e-4)  # every image exactly once
    from ray._private import state

    assert state.actors(victim["ActorID"])["NumRestarts"] >= 1, "the killed actor was restarted"
    assert "Traceback" not in err, err[-3000:]
    assert f"{len(good)} images, {len(good)} faces, 0 errors," in err


def test_a_batch_that_fails_on_an_actor_gets_retry_lines(photos, monkeypatch):
    """AnalyzeBatch, as an actor runs it, with a fault injected into its analysis (no real batch
    fails on demand): every image of the batch gets an error line naming the cause, marked for
    the next run to retry."""
    import numpy as np

    from face.engines.ray import AnalyzeBatch

    batcher = AnalyzeBatch({"detector": "hog", "upsample": 0}, batch_size=2, crop=False)
    sources = [str(p) for p in photos[-2:]]
    good = batcher({"source": np.array(sources, dtype=object)})
    assert [json.loads(line)["source"] for line in good["result"]] == sources

    def out_of_memory(*args, **kwargs):
        raise MemoryError("cannot allocate 3 GiB")

    monkeypatch.setattr(batcher.analyzer, "analyze_stream", out_of_memory)
    failed = [json.loads(line) for line in batcher({"source": np.array(sources, dtype=object)})["result"]]
    assert failed == [{"source": s, "error": f"{s}: its batch failed (MemoryError: cannot allocate 3 GiB); a rerun retries it", "retry": True} for s in sources]


def test_sigterm_stops_a_ray_run_with_whole_batches(ray_address, photos, local_results, tmp_path):
    """SIGTERM to the driver mid-run: exit 143, a line saying how to resume, whole batches of 2
    in the file; the same command then completes it."""
    output, log = tmp_path / "ray.jsonl", tmp_path / "stderr.txt"
    command = [
        sys.executable, "-m", "face.cli", "analyze", str(photos[0].parent), "--output", str(output),
        "--engine", "ray", "--ray-address", ray_address, "--actors", "2", "--batch-size", "2", *DETECTION,
    ]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.monotonic() + 300
        while not (output.exists() and output.read_bytes().count(b"\n") >= 4):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no results after 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=300)
    finally:
        process.kill()
        process.wait()
    err = log.read_text()
    assert code == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    saved = len(read_jsonl(output))
    assert err.strip().splitlines()[-1] == f"howold: stopped by SIGTERM; {saved} results safely in {output}; run the same command again to resume"
    assert saved % 2 == 0 and saved < len(photos)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1 when the broken files were left for this run
    assert_same_results(read_jsonl(output), local_results, tolerance=1e-4)
