"""A registry of face detectors behind one interface, like `face.backbones`.

Each entry finds faces in an RGB image at the size it is given; `FaceDetector` in
`face.detection` bounds that size and maps the boxes back. Modules are imported only when
their detector is created, so YuNet never loads dlib and dlib never loads the ONNX model.
"""
from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .base import Detection, Detector

DETECTORS: Registry[Detector] = Registry("detector", {
    "yunet": "face.detectors.yunet:YuNetDetector",
    "hog": "face.detectors.dlib_detectors:HogDetector",
    "cnn": "face.detectors.dlib_detectors:CnnDetector",
})

#: A small CNN: finds profile and small faces HOG misses, at a fraction of dlib's CNN's cost.
DEFAULT_DETECTOR = "yunet"


def register_detector(name: str, factory: Callable[..., Detector]) -> None:
    DETECTORS.register(name, factory)


def list_detectors() -> list[str]:
    return DETECTORS.names()


def create_detector(name: str = DEFAULT_DETECTOR, **kwargs) -> Detector:
    """Build the detector called `name`; kwargs go to its constructor (e.g. ``threshold=``)."""
    return DETECTORS.create(name, **kwargs)


__all__ = ["DEFAULT_DETECTOR", "Detection", "Detector", "create_detector", "list_detectors", "register_detector"]
