"""The interface every batch engine implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, Mapping, Sequence


def failed_batch(sources: Sequence[str], error: BaseException) -> list[dict]:
    """Error lines for a batch that failed as a whole (not because of its images): each names
    the cause and carries `"retry": true`, so that the next run of the command tries them again."""
    cause = " ".join((str(error).strip() or type(error).__name__).split())
    return [{"source": str(source), "error": f"{source}: its batch failed ({type(error).__name__}: {cause}); a rerun retries it", "retry": True} for source in sources]


class Engine(ABC):
    """Runs Analyzers over a list of image paths and yields one result per path.

    A result is the Analyzer's: {"source", "faces"} or {"source", "error"}. Results come in
    batches, each a list of the results of one batch of images, as it was analysed (the
    JSONL writer writes a batch whole or not at all). `ordered` says whether results come in
    the order of the sources (the JSONL writer does not need it). Engines are context
    managers: leaving one releases what it started.
    """

    name: str = ""
    ordered: bool = True

    @abstractmethod
    def run_batches(self, sources: Sequence[str], analyzer_options: Mapping[str, Any], batch_size: int = 32, crop: bool = False) -> Iterator[list[dict]]:
        """Results for `sources`, each once, a batch at a time; `analyzer_options` are
        `Analyzer(**options)`'s, `batch_size` and `crop` are `Analyzer.analyze_stream`'s.
        A batch that fails as a whole gives `failed_batch` lines instead of ending the run."""

    def run(self, sources: Sequence[str], analyzer_options: Mapping[str, Any], batch_size: int = 32, crop: bool = False) -> Iterator[dict]:
        """The same results one by one."""
        for batch in self.run_batches(sources, analyzer_options, batch_size, crop):
            yield from batch

    def close(self) -> None:
        """Release what the engine started (processes, clusters)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
