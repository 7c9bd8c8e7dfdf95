"""The local engine: one Analyzer in this process, streaming in order."""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from .base import Engine


class LocalEngine(Engine):
    name = "local"
    ordered = True

    def run(self, sources: Sequence[str], analyzer_options: Mapping[str, Any], batch_size: int = 32, crop: bool = False) -> Iterator[dict]:
        from ..analyzer import Analyzer

        yield from Analyzer(**analyzer_options).analyze_stream(sources, batch_size, crop)
