"""A JSONL results file that survives being killed: one line per image, appended as results
come, and read back on a rerun to skip what is already done.

Every line is written whole or not at all: a write that fails part-way (a full disk) or is
interrupted (Ctrl-C, SIGTERM) cuts the file back to the end of the last whole line. A writer
killed mid-line (kill -9, power cut) still leaves a last line without its newline;
`completed_sources` cuts it off, so that image is done again and appears exactly once.

A line may carry `"retry": true`: its image failed for a reason outside the image (a batch
that failed on a worker). Such lines are not done: the next run drops them and tries again.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from .atomic import replacing
from .errors import WriteError

RESUME = "run the same command again to resume"


class ResultsFileError(WriteError):
    """The results file cannot be used or written (not a regular file, a full disk, a read-only
    folder). The message says how many results are safely in the file."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_results_path(path: str | Path) -> None:
    """Refuse, before any work starts, a results path that cannot hold results: a folder, a
    FIFO, a device (reading /dev/full to resume would never end), or one under a file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ResultsFileError(f"{path}: cannot create it, {parent} is not a folder") from None
        return
    except OSError as error:
        raise ResultsFileError(f"{path}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise ResultsFileError(f"{path}: {_kind(mode)}, not a results file; give the name of a .jsonl file")


def write_failure(what: str, error: OSError, results_path: str | Path, saved: int) -> ResultsFileError:
    """The one-line error for a failed write: what failed, why, what is safe, how to go on."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space, then " + RESUME
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make the folder writable, then " + RESUME
    else:
        advice = RESUME
    count = f"{saved} result{'s' if saved != 1 else ''}"
    return ResultsFileError(f"cannot write {what}: {reason}; {count} safely in {results_path}; {advice}")


def parse_result_line(line: str | bytes) -> dict:
    """One line of a results file as a dict that names its source; ValueError when it is not one."""
    try:
        entry = json.loads(line)
        entry["source"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a howold result line") from None
    return entry


def completed_sources(path: str | Path) -> dict[str, dict]:
    """{source: result} for every complete line of `path` ({} when it does not exist).

    A torn last line is truncated away, and lines marked `"retry": true` are removed (their
    images are to be done again); any other line that is not a result is an error.
    """
    path = Path(path)
    check_results_path(path)
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    retried = False
    try:
        with open(path, "rb") as file:
            good_end = 0
            for number, line in enumerate(file, 1):
                if not line.endswith(b"\n"):  # the last line, torn by a kill
                    with open(path, "rb+") as cut:
                        cut.truncate(good_end)
                    break
                try:
                    entry = parse_result_line(line)
                except ValueError:
                    raise ResultsFileError(f"{path}:{number}: not a howold result line; fix or remove it to resume") from None
                source = entry["source"]
                good_end += len(line)
                if entry.get("retry"):
                    retried = True
                else:
                    done[source] = entry
        if retried:
            _drop_retried(path)
    except OSError as error:  # cutting a torn line or dropping retry lines: the file keeps its whole lines
        raise write_failure(str(path), error, path, len(done)) from None
    return done


def _drop_retried(path: Path) -> None:
    """Rewrite `path` without its retry lines, all or nothing (a full disk leaves it as it was)."""
    with replacing(path) as partial, open(path, "rb") as source, open(partial, "wb") as target:
        for line in source:
            if not json.loads(line).get("retry"):
                target.write(line)


class ResultsWriter:
    """Appends results to a JSONL file, one whole line each, straight to the file (no buffer).

    `saved` counts the results in the file: `existing` (those read back to resume) plus the
    lines written since. A failed write raises ResultsFileError, with that count.
    """

    def __init__(self, path: str | Path, existing: int = 0):
        self.path = Path(path)
        self.saved = existing
        self._fd = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            self._end = os.fstat(self._fd).st_size
        except OSError as error:
            raise write_failure(str(self.path), error, self.path, self.saved) from None

    def write(self, result: dict) -> None:
        self.write_many([result])

    def write_many(self, results: list[dict]) -> None:
        """Append `results` together: all their lines, or (on any failure) none of them."""
        data = "".join(json.dumps(result) + "\n" for result in results).encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except BaseException as error:  # a full disk, or Ctrl-C / SIGTERM mid-write
            self._cut()
            if isinstance(error, OSError):
                raise write_failure(str(self.path), error, self.path, self.saved) from None
            raise
        self._end += len(data)
        self.saved += len(results)

    def _cut(self) -> None:
        """Drop what a failed write left after the last whole line (truncating needs no space)."""
        try:
            os.ftruncate(self._fd, self._end)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
