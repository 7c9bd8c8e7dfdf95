"""Name -> implementation, for every job that has more than one (backbones, detectors,
batch engines): each entry is a factory or a "module:attribute" string imported only
when it is first asked for, so an unused implementation costs no import."""
from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entries: dict[str, str | Callable[..., T]]):
        self.kind = kind  # "backbone", "detector", ...: for the error message
        self._entries = dict(entries)

    def register(self, name: str, factory: Callable[..., T]) -> None:
        self._entries[name] = factory

    def names(self) -> list[str]:
        return sorted(self._entries)

    def factory(self, name: str) -> Callable[..., T]:
        """The class or function that builds `name`, importing its module."""
        try:
            factory = self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}") from None
        if isinstance(factory, str):
            module_name, attribute = factory.split(":")
            factory = getattr(importlib.import_module(module_name), attribute)
        return factory

    def create(self, name: str, **kwargs) -> T:
        return self.factory(name)(**kwargs)
