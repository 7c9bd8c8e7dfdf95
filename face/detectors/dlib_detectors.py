"""dlib's two detectors, the design's originals: HOG (frontal faces, fast) and the CNN (mmod;
finds more, slowly). Neither gives landmarks: faces are aligned by dlib's 5-point predictor.
"""
from __future__ import annotations

import numpy as np

from ..backbones.dlib_resnet import dlib_model_path
from .base import Detection, Detector

#: Below this many pixels a side no face fits, and dlib's CNN raises on such images.
MIN_SIDE = 16


class HogDetector(Detector):
    name = "hog"
    default_upsample = 1  # HOG misses faces under about 80 px without one doubling
    #: Real faces score 0.35-2.7 on the demo photos, the astronaut's mission patch 0.04-0.12.
    threshold = 0.2

    def __init__(self, threshold: float | None = None):
        import dlib

        super().__init__(threshold)
        self._detector = dlib.get_frontal_face_detector()

    def find(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        if min(image.shape[:2]) * 2**upsample < MIN_SIDE:
            return []
        with self._lock:
            rects, scores, _ = self._detector.run(image, upsample, self.threshold)
        return [Detection((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores)]


class CnnDetector(Detector):
    name = "cnn"
    default_upsample = 1
    threshold = 0.0

    def __init__(self, threshold: float | None = None):
        import dlib

        super().__init__(threshold)
        self._detector = dlib.cnn_face_detection_model_v1(str(dlib_model_path("cnn_detector")))

    def find(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        if min(image.shape[:2]) * 2**upsample < MIN_SIDE:
            return []
        with self._lock:
            found = self._detector(image, upsample)
        return [
            Detection((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
            for d in found
            if d.confidence >= self.threshold
        ]
