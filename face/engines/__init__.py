"""A registry of batch engines behind one interface: who runs the Analyzer over many images.

`local` runs one Analyzer in this process (`Analyzer.analyze_stream`); `ray` runs an actor
pool of Analyzers with Ray Data, on this machine or a cluster. Modules are imported only
when their engine is created, so the local engine never imports Ray.
"""
from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .base import Engine

ENGINES: Registry[Engine] = Registry("engine", {
    "local": "face.engines.local:LocalEngine",
    "ray": "face.engines.ray:RayEngine",
})

DEFAULT_ENGINE = "local"


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    ENGINES.register(name, factory)


def list_engines() -> list[str]:
    return ENGINES.names()


def create_engine(name: str = DEFAULT_ENGINE, **options) -> Engine:
    """Build the engine called `name`; options go to its constructor."""
    return ENGINES.create(name, **options)


__all__ = ["DEFAULT_ENGINE", "Engine", "create_engine", "list_engines", "register_engine"]
