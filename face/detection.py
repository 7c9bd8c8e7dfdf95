"""Face detection with dlib: the HOG detector (fast) or the CNN (mmod) detector (accurate)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .backbones.dlib_resnet import dlib_model_path

DETECTORS = ("hog", "cnn")
#: Below this many pixels a side (as the detector sees it) no face fits, and dlib's CNN
#: raises on such images, so detection returns nothing.
MIN_DETECTABLE_SIDE = 16


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # left, top, right, bottom in the original image's pixels
    confidence: float  # dlib's score: HOG's SVM margin, or the CNN's mmod confidence


@dataclass
class FaceDetector:
    """Finds faces; big images are scanned at a reduced size and boxes mapped back.

    `upsample` doubles the image that many times first, to find small faces.
    """

    method: str = "hog"
    upsample: int = 1
    max_side: int = 1600  # longest side the detector sees, before upsampling
    #: minimum score; None: 0.2 for HOG (real faces score 0.35-2.7 on the demo photos, the
    #: astronaut's mission patch 0.04-0.12) and 0.0 for the CNN
    threshold: float | None = None

    def __post_init__(self) -> None:
        import dlib

        if self.method not in DETECTORS:
            raise ValueError(f"unknown detector {self.method!r}; choose one of {', '.join(DETECTORS)}")
        if self.threshold is None:
            self.threshold = 0.2 if self.method == "hog" else 0.0
        if self.method == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(dlib_model_path("cnn_detector")))
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image if scale == 1.0 else cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        small = np.ascontiguousarray(small, dtype=np.uint8)
        if min(small.shape[:2]) * 2**self.upsample < MIN_DETECTABLE_SIDE:
            return []
        with self._lock:
            if self.method == "hog":
                rects, scores, _ = self._detector.run(small, self.upsample, self.threshold)
                found = list(zip(rects, scores))
            else:
                found = [(d.rect, d.confidence) for d in self._detector(small, self.upsample) if d.confidence >= self.threshold]
        detections = []
        for rect, score in found:
            box = tuple(int(round(v / scale)) for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            detections.append(Detection(box, float(score)))
        return detections


def clip_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return (max(0, left), max(0, top), min(width, right), min(height, bottom))


def box_area(box: tuple[int, int, int, int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])
