"""A registry of face detectors behind one interface, like `face.backbones`.

Each entry finds faces in an RGB image at the size it is given; `FaceDetector` in
`face.detection` bounds that size and maps the boxes back. Modules are imported only when
their detector is created, so YuNet never loads dlib and dlib never loads the ONNX model.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ConfigError
from .base import Detection, Detector

_REGISTRY: dict[str, str | Callable[..., Detector]] = {
    "yunet": "face.detectors.yunet:YuNetDetector",
    "hog": "face.detectors.dlib_detectors:HogDetector",
    "cnn": "face.detectors.dlib_detectors:CnnDetector",
}

#: A small CNN: finds profile and small faces HOG misses, at a fraction of dlib's CNN's cost.
DEFAULT_DETECTOR = "yunet"


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    _REGISTRY[name] = factory


def list_detectors() -> list[str]:
    return sorted(_REGISTRY)


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> Detector:
    """Build the detector called `name`; kwargs go to its constructor (e.g. ``threshold=``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown detector {name!r}; choose one of {', '.join(list_detectors())}") from None
    if isinstance(factory, str):
        module_name, attribute = factory.split(":")
        factory = getattr(importlib.import_module(module_name), attribute)
    return factory(**kwargs)


__all__ = ["DEFAULT_DETECTOR", "Detection", "Detector", "create_detector", "list_detectors", "register_detector"]
