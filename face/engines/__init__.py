"""A registry of batch engines behind one interface: who runs the Analyzer over many images.

`local` runs one Analyzer in this process (`Analyzer.analyze_stream`); `ray` runs an actor
pool of Analyzers with Ray Data, on this machine or a cluster. Modules are imported only
when their engine is created, so the local engine never imports Ray.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ConfigError
from .base import Engine

# name -> "module:factory"
_REGISTRY: dict[str, str | Callable[..., Engine]] = {
    "local": "face.engines.local:LocalEngine",
    "ray": "face.engines.ray:RayEngine",
}

DEFAULT_ENGINE = "local"


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    _REGISTRY[name] = factory


def list_engines() -> list[str]:
    return sorted(_REGISTRY)


def create_engine(name: str = DEFAULT_ENGINE, **options) -> Engine:
    """Build the engine called `name`; options go to its constructor."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(list_engines())}") from None
    if isinstance(factory, str):
        module_name, attribute = factory.split(":")
        factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**options)


__all__ = ["DEFAULT_ENGINE", "Engine", "create_engine", "list_engines", "register_engine"]
