"""Face detection at a bounded size: any registered detector (`face.detectors`), with big
images scanned smaller and the boxes and landmarks mapped back to the original pixels."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detectors import DEFAULT_DETECTOR, Detection, create_detector, list_detectors

#: Longest side the detector sees by default. YuNet's time grows with the pixels (0.85 s at
#: 3000x2171 on 2 cores, 0.09 s at 1280) while the smallest face it finds at 1280 is still
#: small (benchmarks/bench_detection.py measures both).
DEFAULT_MAX_SIDE = 1280


@dataclass
class FaceDetector:
    """Finds faces with the detector called `method`; `upsample` doubles the image that many
    times first (None: the detector's default), `threshold` overrides its minimum score."""

    method: str = DEFAULT_DETECTOR
    upsample: int | None = None
    max_side: int = DEFAULT_MAX_SIDE  # longest side the detector sees, before upsampling
    threshold: float | None = None

    def __post_init__(self) -> None:
        self._detector = create_detector(self.method, threshold=self.threshold)
        self.threshold = self._detector.threshold
        if self.upsample is None:
            self.upsample = self._detector.default_upsample

    def warm_up(self) -> None:
        """Run once at the size most photos come to after the shrinking (a 4:3 landscape
        camera photo at `max_side`), so the first photo does not pay for the runtime's first
        allocations. Other sizes cost no more the first time than later (YuNet on 2 cores:
        0.20 s at 1280x720 on its first pass after 1280x960, then 0.20 s), so one is enough."""
        self._detector.warm_up([(self.max_side, self.max_side * 3 // 4)])

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        small = image if scale == 1.0 else cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        small = np.ascontiguousarray(small, dtype=np.uint8)
        return [d.scaled(1 / scale) for d in self._detector.find(small, self.upsample)]


def clip_box(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return (max(0, left), max(0, top), min(width, right), min(height, bottom))


def box_area(box: tuple[int, int, int, int]) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


__all__ = ["DEFAULT_DETECTOR", "Detection", "FaceDetector", "box_area", "clip_box", "list_detectors"]
