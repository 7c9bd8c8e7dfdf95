"""The local engine: one Analyzer in this process, streaming in order."""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from .base import Engine, failed_batch


class LocalEngine(Engine):
    name = "local"
    ordered = True

    def run_batches(self, sources: Sequence[str], analyzer_options: Mapping[str, Any], batch_size: int = 32, crop: bool = False) -> Iterator[list[dict]]:
        from ..analyzer import Analyzer

        analyzer = Analyzer(**analyzer_options)
        for start in range(0, len(sources), batch_size):
            chunk = [str(source) for source in sources[start:start + batch_size]]
            try:  # one chunk is one batch of analyze_stream's
                results = list(analyzer.analyze_stream(chunk, batch_size, crop))
            except Exception as error:  # noqa: BLE001 - a failed batch must not end the run
                results = failed_batch(chunk, error)
            yield results
