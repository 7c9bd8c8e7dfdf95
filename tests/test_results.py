"""The JSONL results file on its own (no models): what paths it refuses, the one-line write
errors, reading back a file to resume, and writing batches whole."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess

import pytest

from face.errors import HowoldError
from face.results import RESUME, ResultsFileError, ResultsWriter, check_results_path, completed_sources, write_failure


@pytest.fixture
def small_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs); skipped where mounting is not permitted."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_new_or_regular_results_path_is_accepted(tmp_path):
    check_results_path(tmp_path / "new.jsonl")  # does not exist yet
    check_results_path(tmp_path / "new" / "deeper" / "r.jsonl")  # nor do its folders
    (tmp_path / "r.jsonl").write_text("")
    check_results_path(tmp_path / "r.jsonl")
    check_results_path(str(tmp_path / "r.jsonl"))


def test_paths_that_cannot_hold_results_are_named_with_what_they_are(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        for path, kind in ((tmp_path, "a folder"), (tmp_path / "pipe", "a FIFO (named pipe)"), ("/dev/null", "a device"), (tmp_path / "sock", "a socket")):
            with pytest.raises(ResultsFileError) as refused:
                check_results_path(path)
            assert str(refused.value) == f"{path}: {kind}, not a results file; give the name of a .jsonl file"
    finally:
        server.close()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ResultsFileError) as refused:
        check_results_path(tmp_path / "file.txt" / "sub" / "r.jsonl")
    assert str(refused.value) == f"{tmp_path / 'file.txt' / 'sub' / 'r.jsonl'}: cannot create it, {tmp_path / 'file.txt'} is not a folder"
    assert isinstance(refused.value, HowoldError)


def test_a_path_that_cannot_be_looked_at_is_one_line(tmp_path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    with pytest.raises(ResultsFileError) as refused:
        check_results_path(loop)
    assert str(refused.value) == f"{loop}: {os.strerror(errno.ELOOP)}"


def test_an_unreadable_folder_on_the_way_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    with pytest.raises(ResultsFileError, match=r"locked/r.jsonl: Permission denied$"):
        check_results_path(locked / "r.jsonl")


@pytest.mark.parametrize(
    "code, advice",
    [
        (errno.ENOSPC, "free some space, then " + RESUME),
        (errno.EDQUOT, "free some space, then " + RESUME),
        (errno.EROFS, "make the folder writable, then " + RESUME),
        (errno.EACCES, "make the folder writable, then " + RESUME),
        (errno.EPERM, "make the folder writable, then " + RESUME),
        (errno.EIO, RESUME),
    ],
)
def test_write_failures_say_what_why_how_many_and_what_next(code, advice):
    error = write_failure("r.jsonl", OSError(code, os.strerror(code)), "out/r.jsonl", 2)
    assert str(error) == f"cannot write r.jsonl: {os.strerror(code)}; 2 results safely in out/r.jsonl; {advice}"
    assert "1 result safely" in str(write_failure("r.jsonl", OSError(code, os.strerror(code)), "r.jsonl", 1))
    assert "0 results safely" in str(write_failure("r.jsonl", OSError(code, os.strerror(code)), "r.jsonl", 0))
    assert str(write_failure("x", OSError("no errno"), "x", 3)) == f"cannot write x: no errno; 3 results safely in x; {RESUME}"


def test_completed_sources_reads_whole_lines_and_cuts_a_torn_one(tmp_path):
    path = tmp_path / "r.jsonl"
    assert completed_sources(path) == {} and not path.exists()
    whole = [{"source": "a.jpg", "faces": []}, {"source": "b.jpg", "error": "b.jpg: not an image"}, {"source": "a.jpg", "faces": [{"age": 30}]}]
    text = "".join(json.dumps(r) + "\n" for r in whole)
    path.write_text(text + '{"source": "c.jp')
    done = completed_sources(path)
    assert done == {"a.jpg": whole[2], "b.jpg": whole[1]}  # the later line of a source wins
    assert path.read_text() == text  # the torn line is gone, the whole ones untouched
    assert completed_sources(path) == done and path.read_text() == text


@pytest.mark.parametrize("line", ["not json", '{"faces": []}', "[1, 2]", '"a string"'])
def test_a_line_that_is_not_a_result_is_refused_with_its_number(tmp_path, line):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"source": "a.jpg", "faces": []}) + "\n" + line + "\n")
    with pytest.raises(ResultsFileError) as refused:
        completed_sources(path)
    assert str(refused.value) == f"{path}:2: not a howold result line; fix or remove it to resume"


def test_retry_lines_go_and_the_rest_stays_in_order(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [
        {"source": "a.jpg", "faces": []},
        {"source": "b.jpg", "error": "b.jpg: its batch failed (RuntimeError: boom); a rerun retries it", "retry": True},
        {"source": "c.jpg", "faces": [], "retry": False},
        {"source": "d.jpg", "error": "d.jpg: its batch failed (RuntimeError: boom); a rerun retries it", "retry": True},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert completed_sources(path) == {"a.jpg": lines[0], "c.jpg": lines[2]}
    assert lines_of(path) == [lines[0], lines[2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]  # no partial file left
    assert completed_sources(path) == {"a.jpg": lines[0], "c.jpg": lines[2]}


def test_a_read_only_file_with_a_torn_line_is_a_write_failure_counting_the_whole_lines(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"source": "a.jpg", "faces": []}) + "\n" + '{"sou')
    path.chmod(0o444)
    with pytest.raises(ResultsFileError, match=r"1 result safely"):
        completed_sources(path)


def test_a_torn_line_on_a_read_only_disk_is_a_write_failure_counting_the_whole_lines(small_disk):
    path = small_disk / "r.jsonl"
    text = json.dumps({"source": "a.jpg", "faces": []}) + "\n"
    path.write_text(text + '{"sou')
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(ResultsFileError) as failed:
        completed_sources(path)
    reason = os.strerror(errno.EROFS)
    assert str(failed.value) == f"cannot write {path}: {reason}; 1 result safely in {path}; make the folder writable, then {RESUME}"
    assert path.read_text() == text + '{"sou'  # left as it was


def test_a_file_without_retry_lines_is_not_rewritten(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"source": "a.jpg", "faces": []}) + "\n")
    before = path.stat().st_ino
    assert list(completed_sources(path)) == ["a.jpg"]
    assert path.stat().st_ino == before  # a rewrite goes through a new file (a new inode)


def test_a_failed_batch_write_is_cut_back_to_the_last_whole_line(small_disk):
    """A batch too big for what is left of the disk: the file keeps exactly the batches before."""
    path = small_disk / "r.jsonl"
    path.write_text(json.dumps({"source": "old.jpg", "faces": []}) + "\n")
    with ResultsWriter(path, existing=1) as writer:
        writer.write_many([{"source": "a.jpg", "faces": []}, {"source": "b.jpg", "faces": []}])
        writer.write({"source": "c.jpg", "faces": []})
        kept = path.read_text()
        with pytest.raises(ResultsFileError, match=r"No space left on device; 4 results safely in"):
            writer.write_many([{"source": f"{n}.jpg", "faces": [{"note": "x" * 1000}]} for n in range(100)])
        assert path.read_text() == kept and writer.saved == 4
        writer.write({"source": "d.jpg", "faces": []})  # still usable: room for a small line
    assert [r["source"] for r in lines_of(path)] == ["old.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_the_writer_appends_whole_lines_and_counts_them(tmp_path):
    path = tmp_path / "new" / "deeper" / "r.jsonl"  # its folders are made
    with ResultsWriter(path, existing=0) as writer:
        writer.write({"source": "a.jpg", "faces": []})
        writer.write_many([{"source": "b.jpg", "faces": []}, {"source": "c.jpg", "faces": [{"age": 3}]}])
        writer.write_many([])
        assert writer.saved == 3
    assert lines_of(path) == [{"source": "a.jpg", "faces": []}, {"source": "b.jpg", "faces": []}, {"source": "c.jpg", "faces": [{"age": 3}]}]
    with ResultsWriter(path, existing=3) as writer:  # resuming appends after what is there
        writer.write({"source": "d.jpg", "faces": []})
        assert writer.saved == 4
    assert [r["source"] for r in lines_of(path)] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by all, executable by none
    writer.close()  # closing twice closes nothing else (this process's stdout, say)
    os.fstat(1)
    assert path.read_text().endswith("}\n") and path.read_text().count("\n") == 4


def test_a_full_device_is_a_write_failure_and_the_count_stays(tmp_path):
    """/dev/full fails every write with ENOSPC: the writer says so in one line, with the count
    of what is safe, and stays usable (nothing half-written is counted)."""
    writer = ResultsWriter("/dev/full", existing=5)
    try:
        with pytest.raises(ResultsFileError) as failed:
            writer.write_many([{"source": "a.jpg", "faces": []}])
        assert str(failed.value) == f"cannot write /dev/full: {os.strerror(errno.ENOSPC)}; 5 results safely in /dev/full; free some space, then {RESUME}"
        assert writer.saved == 5
    finally:
        writer.close()


def test_a_writer_that_cannot_open_its_file_is_one_line(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ResultsFileError) as failed:
        ResultsWriter(tmp_path / "file.txt" / "r.jsonl", existing=7)
    path = tmp_path / "file.txt" / "r.jsonl"
    assert str(failed.value) == f"cannot write {path}: {os.strerror(errno.EEXIST)}; 7 results safely in {path}; {RESUME}"
