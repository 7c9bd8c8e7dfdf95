"""Five-point landmarks and aligned face chips, with dlib, as face_recognition does."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .backbones.base import ChipSpec
from .backbones.dlib_resnet import dlib_model_path

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


@dataclass
class Aligner:
    """Finds five landmarks inside a face box and cuts out the aligned chip a backbone wants."""

    def __post_init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path("landmarks5")))
        self._lock = threading.Lock()

    def landmarks(self, image: np.ndarray, box: Box):
        left, top, right, bottom = (int(round(v)) for v in box)
        with self._lock:
            return self._predictor(image, self._dlib.rectangle(left, top, right, bottom))

    def chips(self, image: np.ndarray, boxes: list[Box], spec: ChipSpec) -> np.ndarray:
        """Aligned chips (N, size, size, 3) uint8, one per box; boxes may reach past the border."""
        if not boxes:
            return np.zeros((0, spec.size, spec.size, 3), np.uint8)
        image = np.ascontiguousarray(image, dtype=np.uint8)
        shapes = self._dlib.full_object_detections()
        for box in boxes:
            shapes.append(self.landmarks(image, box))
        chips = self._dlib.get_face_chips(image, shapes, size=spec.size, padding=spec.padding)
        return np.stack([np.asarray(chip, np.uint8) for chip in chips])


def crop_box(image: np.ndarray, inset: float = 0.0) -> Box:
    """The box of an image that already is a face crop (as UTKFace's), optionally inset."""
    height, width = image.shape[:2]
    dx, dy = int(width * inset), int(height * inset)
    return (dx, dy, width - dx, height - dy)
