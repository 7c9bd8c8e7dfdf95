"""`howold analyze --output` under faults: a full disk, a read-only folder, a results path that
is not a regular file, a batch that fails as a whole, and SIGTERM. Each ends in one line that
says what failed and how many results are safe, never a traceback, and the same command then
completes the file with every image exactly once.

The full disk and the read-only folder are real: a 64 KiB tmpfs mounted for the test (which
needs root, or the tests skip).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image

from face.cli import main
from face.results import ResultsWriter, completed_sources

try:
    from photo_folder import analyze_until_lines, assert_same_results, read_jsonl
except ImportError:  # run from the repository root as a package
    from tests.photo_folder import analyze_until_lines, assert_same_results, read_jsonl

DETECTION = ["--detector", "hog", "--upsample", "0"]
RESUME = "run the same command again to resume"


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 64 KiB filesystem (tmpfs), unmounted after the test."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def finishes(work, timeout: float = 120):
    """work()'s value, failing the test if it does not end in `timeout` s (it might block forever)."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert box, f"still running after {timeout} s"
    return box[0]


def analyze(folder: Path, output: Path, *extra: str) -> int:
    return main(["analyze", str(folder), "--output", str(output), "--batch-size", "4", *DETECTION, *extra])


def last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# ---- a full disk and a read-only folder, for real ----------------------------------------


def test_a_full_disk_is_one_line_and_the_same_command_completes(small_disk, photos, photo_results, capsys):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 56 * 1024)  # leaves 8 KiB: a few batches' lines
    output = small_disk / "r.jsonl"
    folder = photos[0].parent
    assert analyze(folder, output) == 1
    line = last_line(capsys)
    pattern = rf"howold: error: cannot write {output}: No space left on device; (\d+) results safely in {output}; free some space, then {RESUME}"
    match = re.fullmatch(pattern, line)
    assert match, line
    saved = int(match.group(1))
    data = output.read_bytes()
    assert data.endswith(b"\n"), "a torn last line was left"
    assert 0 < saved < len(photos) and len(read_jsonl(output)) == saved
    assert saved % 4 == 0, "batches of 4 are written whole or not at all"
    filler.unlink()  # space freed
    assert analyze(folder, output) == 1  # the three broken files
    assert_same_results(read_jsonl(output), photo_results)
    assert f"{len(photos) - saved} images ({saved} already in {output})" in capsys.readouterr().err


def test_a_full_disk_for_the_annotated_images(small_disk, photos, photo_results, tmp_path, capsys):
    output = tmp_path / "r.jsonl"  # the results have room; the annotated copies (tens of KB each) do not
    good = sorted(p for p in photos if p.name.startswith("photo_") and p.suffix == ".jpg")[:12]
    folder = tmp_path / "some"
    folder.mkdir()
    for path in good:
        (folder / path.name).symlink_to(path)
    annotated = small_disk / "annotated"
    assert analyze(folder, output, "--output-dir", str(annotated)) == 1
    line = last_line(capsys)
    match = re.fullmatch(rf"howold: error: cannot write the annotated image {annotated}/\S+: No space left on device; (\d+) results safely in {output}; free some space, then {RESUME}", line)
    assert match, line
    assert len(read_jsonl(output)) == int(match.group(1)) < len(good)
    remount(small_disk, "size=4m")  # room made
    assert analyze(folder, output, "--output-dir", str(annotated)) == 0
    lines = read_jsonl(output)
    assert sorted(r["source"] for r in lines) == sorted(str(folder / p.name) for p in good)
    assert sorted(Path(r["annotated"]).name for r in lines) == sorted(p.name for p in good)  # a half-written copy was written again
    for result in lines:
        with Image.open(result["annotated"]) as image:
            image.load()  # whole, not cut by the full disk


def test_a_read_only_folder_is_one_line_and_resumes_once_writable(small_disk, photos, photo_results, capsys):
    output = small_disk / "r.jsonl"
    output.write_text("".join(json.dumps(r) + "\n" for r in photo_results[:3]) + json.dumps(photo_results[3])[:50])  # and a torn line
    remount(small_disk, "ro")
    folder = photos[0].parent
    assert analyze(folder, output) == 1
    line = last_line(capsys)
    assert line == f"howold: error: cannot write {output}: Read-only file system; 3 results safely in {output}; make the folder writable, then {RESUME}"
    assert analyze(folder, small_disk / "new.jsonl") == 1
    assert last_line(capsys).startswith(f"howold: error: cannot write {small_disk / 'new.jsonl'}: Read-only file system; 0 results safely in")
    remount(small_disk, "rw")
    (small_disk / "filler").unlink(missing_ok=True)
    assert analyze(folder, output) == 1
    assert_same_results(read_jsonl(output), photo_results)


# ---- results paths that cannot hold results ------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "under a file"])
def test_a_results_path_that_is_not_a_regular_file_is_refused_before_any_work(kind, photos, tmp_path, capsys):
    path = {"folder": tmp_path, "fifo": tmp_path / "pipe", "device": Path("/dev/full"), "under a file": tmp_path / "file.txt" / "r.jsonl"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "under a file":
        (tmp_path / "file.txt").write_text("x")
    # a FIFO would block on open, /dev/full would be read forever: `finishes` catches both
    assert finishes(lambda: main(["analyze", str(photos[0]), "--output", str(path), *DETECTION])) == 1
    expected = {
        "folder": f"howold: error: {path}: a folder, not a results file; give the name of a .jsonl file",
        "fifo": f"howold: error: {path}: a FIFO (named pipe), not a results file; give the name of a .jsonl file",
        "device": f"howold: error: {path}: a device, not a results file; give the name of a .jsonl file",
        "under a file": f"howold: error: {path}: cannot create it, {tmp_path / 'file.txt'} is not a folder",
    }[kind]
    err = capsys.readouterr().err
    assert err.strip() == expected, err  # one line, before any image was read


# ---- the results file's own guarantees ------------------------------------------------------


def test_retry_lines_are_dropped_and_done_again(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [
        {"source": "a.jpg", "faces": []},
        {"source": "b.jpg", "error": "b.jpg: its batch failed (RuntimeError: boom); a rerun retries it", "retry": True},
        {"source": "c.jpg", "error": "c.jpg: not an image"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert set(completed_sources(path)) == {"a.jpg", "c.jpg"}
    assert read_jsonl(path) == [lines[0], lines[2]]  # b.jpg will be written again, once
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]  # no partial file left beside it


def test_dropping_retry_lines_on_a_full_disk_leaves_the_file_as_it_was(small_disk):
    from face.results import ResultsFileError

    path = small_disk / "r.jsonl"
    lines = [{"source": f"{n}.jpg", "faces": [], "pad": "x" * 400} for n in range(90)]
    lines[5] = {"source": "5.jpg", "error": "5.jpg: its batch failed (RuntimeError: boom); a rerun retries it", "retry": True}
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))  # about 40 KiB of 64: no room for a copy
    before = path.read_bytes()
    with pytest.raises(ResultsFileError) as raised:
        completed_sources(path)
    assert str(raised.value) == f"cannot write {path}: No space left on device; 89 results safely in {path}; free some space, then {RESUME}"
    assert path.read_bytes() == before and [p.name for p in small_disk.iterdir()] == ["r.jsonl"]
    remount(small_disk, "size=1m")
    assert len(completed_sources(path)) == 89 and len(read_jsonl(path)) == 89


def test_an_interrupted_batch_write_leaves_no_part_of_it(tmp_path):
    """Ctrl-C (or SIGTERM) while a batch is on its way to the file: none of the batch is written
    (its lines are encoded together, then written in one go that a failure cuts back)."""
    path = tmp_path / "r.jsonl"
    writer = ResultsWriter(path)
    writer.write_many([{"source": "a.jpg", "faces": []}])

    class Interrupting(dict):
        def __init__(self):
            super().__init__(source="b.jpg", faces=[])

        def items(self):  # json.dumps reads it after the first lines of the batch are encoded
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        writer.write_many([{"source": "x.jpg", "faces": []}, Interrupting()])
    writer.write_many([{"source": "c.jpg", "faces": []}, {"source": "d.jpg", "faces": []}])
    writer.close()
    assert [r["source"] for r in read_jsonl(path)] == ["a.jpg", "c.jpg", "d.jpg"]
    assert writer.saved == 3


def test_a_batch_that_fails_whole_gets_retry_lines_and_a_rerun_does_it(photos, photo_results, tmp_path, capsys, monkeypatch):
    """A fault injected into the second batch only (no real batch fails on demand): its four
    images get error lines naming the cause; the rerun does them, and the file ends with
    every image once."""
    from face.analyzer import Analyzer

    real = Analyzer.analyze_stream
    calls = [0]

    def failing_second(self, sources, batch_size=32, crop=False):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("out of memory in the batch")
        return real(self, sources, batch_size, crop)

    monkeypatch.setattr(Analyzer, "analyze_stream", failing_second)
    output = tmp_path / "r.jsonl"
    folder = photos[0].parent
    assert analyze(folder, output) == 1
    err = capsys.readouterr().err
    failed = [r for r in read_jsonl(output) if r.get("retry")]
    assert [r["source"] for r in failed] == [str(p) for p in photos[4:8]]
    assert all(r["error"] == f"{r['source']}: its batch failed (RuntimeError: out of memory in the batch); a rerun retries it" for r in failed)
    assert f"howold: {failed[0]['error']}" in err and "Traceback" not in err
    monkeypatch.setattr(Analyzer, "analyze_stream", real)
    assert analyze(folder, output) == 0  # the broken files' lines are from the first run
    assert f"4 images ({len(photos) - 4} already in {output}), 4 faces, 0 errors" in capsys.readouterr().err
    assert_same_results(read_jsonl(output), photo_results)


# ---- SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_writes_or_drops_the_batch_whole_and_says_how_to_resume(photos, photo_results, tmp_path):
    output = tmp_path / "r.jsonl"
    folder = str(photos[0].parent)
    process = analyze_until_lines(folder, output, 4, DETECTION, stderr=subprocess.PIPE)
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    saved = len(read_jsonl(output))
    assert err.strip().splitlines()[-1] == f"howold: stopped by SIGTERM; {saved} results safely in {output}; {RESUME}"
    assert output.read_bytes().endswith(b"\n")
    assert saved % 2 == 0 and 4 <= saved < len(photos), "whole batches of 2"
    assert main(["analyze", folder, "--output", str(output), *DETECTION]) == 1  # the broken files
    assert_same_results(read_jsonl(output), photo_results)
