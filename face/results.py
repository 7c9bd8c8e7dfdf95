"""A JSONL results file that survives being killed: one line per image, appended and
flushed as results come, and read back on a rerun to skip what is already done.

A writer killed mid-line (kill -9, power cut) leaves a last line without its newline;
`completed_sources` cuts it off, so that image is done again and appears exactly once.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from .errors import HowoldError


def completed_sources(path: str | Path) -> dict[str, dict]:
    """{source: result} for every complete line of `path` ({} when it does not exist).

    A torn last line is truncated away; any other line that is not a result is an error.
    """
    path = Path(path)
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    with open(path, "rb+") as file:
        good_end = 0
        for number, line in enumerate(file, 1):
            if not line.endswith(b"\n"):  # the last line, torn by a kill
                file.truncate(good_end)
                break
            try:
                entry = json.loads(line)
                done[entry["source"]] = entry
            except (ValueError, KeyError, TypeError):
                raise HowoldError(f"{path}:{number}: not a howold result line; fix or remove it to resume") from None
            good_end += len(line)
    return done


class ResultsWriter:
    """Appends results to a JSONL file, one flushed line each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a", encoding="utf-8")

    def write(self, result: dict) -> None:
        self._file.write(json.dumps(result) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
