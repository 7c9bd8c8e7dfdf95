"""The interface every face detector implements."""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels


@dataclass(frozen=True)
class Detection:
    box: Box
    #: the detector's own score (YuNet's probability, HOG's SVM margin, mmod's confidence);
    #: None for a box the caller gave
    confidence: float | None
    #: (5, 2) float32 x, y of the right eye, left eye, nose tip, right and left mouth corner
    #: (the subject's right and left), or None when the detector gives no landmarks
    landmarks: np.ndarray | None = None

    def scaled(self, factor: float) -> "Detection":
        """The same face in an image `factor` times the size (boxes rounded to whole pixels)."""
        box = tuple(int(round(v * factor)) for v in self.box)
        landmarks = None if self.landmarks is None else (self.landmarks * factor).astype(np.float32)
        return Detection(box, self.confidence, landmarks)


class Detector(ABC):
    """Finds faces in an RGB uint8 image at the size it is given."""

    name: str
    #: the detector's default minimum score, chosen by measurement (see its module)
    threshold: float
    #: times the image is doubled before detection unless the caller says otherwise
    default_upsample: int = 0

    def __init__(self, threshold: float | None = None):
        if threshold is not None:
            self.threshold = threshold
        self._lock = threading.Lock()  # one dlib or OpenCV net is not safe to run from two threads at once

    def warm_up(self, sizes: list[tuple[int, int]]) -> None:
        """Prepare for images of these (width, height) sizes, if the detector gains by it."""

    @abstractmethod
    def find(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        """Faces in a contiguous RGB uint8 image; `upsample` doubles it that many times first."""
