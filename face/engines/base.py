"""The interface every batch engine implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, Mapping, Sequence


class Engine(ABC):
    """Runs Analyzers over a list of image paths and yields one result per path.

    A result is the Analyzer's: {"source", "faces"} or {"source", "error"}. `ordered` says
    whether results come in the order of the sources (the JSONL writer does not need it).
    Engines are context managers: leaving one releases what it started.
    """

    name: str = ""
    ordered: bool = True

    @abstractmethod
    def run(self, sources: Sequence[str], analyzer_options: Mapping[str, Any], batch_size: int = 32, crop: bool = False) -> Iterator[dict]:
        """Results for `sources`, each once; `analyzer_options` are `Analyzer(**options)`'s,
        `batch_size` and `crop` are `Analyzer.analyze_stream`'s."""

    def close(self) -> None:
        """Release what the engine started (processes, clusters)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
