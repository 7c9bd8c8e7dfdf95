"""YuNet (Shiqi Yu et al., 2023): a 230 KB CNN face detector with five landmarks, run by
OpenCV's `cv2.FaceDetectorYN`.

The model file ships in `weights/` (MIT licence beside it) and is checked against a pinned
sha256 at load, so a truncated or swapped file is a WeightsError that names it, not a
crash inside OpenCV.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import cv2
import numpy as np

from ..errors import WeightsError
from ..paths import shipped_weights_dir
from .base import Detection, Detector

MODEL_FILE = "face_detection_yunet_2026may.onnx"
MODEL_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
#: Below this many pixels a side YuNet's feature pyramid has nothing to look at.
MIN_SIDE = 32


def default_model_path() -> Path:
    return shipped_weights_dir() / MODEL_FILE


def check_model_file(path: Path, sha256: str = MODEL_SHA256) -> None:
    if not path.is_file():
        raise WeightsError(f"{path}: YuNet model file is missing; reinstall howold or pass model=PATH")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise WeightsError(f"{path}: not the YuNet model howold was tested with (sha256 {digest[:16]}..., want {sha256[:16]}...); the file is corrupt or replaced")


class YuNetDetector(Detector):
    name = "yunet"
    #: Real faces on the demo photos and FairFace crops score 0.6-0.95; see benchmarks/bench_detection.py.
    threshold = 0.6

    def __init__(self, threshold: float | None = None, model: str | Path | None = None, sha256: str | None = MODEL_SHA256, nms_threshold: float = 0.3):
        path = Path(model) if model else default_model_path()
        if sha256 is not None:
            check_model_file(path, sha256)
        if threshold is not None:
            self.threshold = threshold
        try:
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.threshold, nms_threshold, 5000)
        except cv2.error as error:
            raise WeightsError(f"{path}: OpenCV cannot load it as a YuNet model ({str(error).strip().splitlines()[-1]})") from None
        self._lock = threading.Lock()  # one OpenCV net is not safe to run from two threads at once

    def find(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        factor = 2**upsample
        if factor != 1:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        height, width = image.shape[:2]
        if min(height, width) < MIN_SIDE:
            return []
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        with self._lock:
            self._net.setInputSize((width, height))
            _, faces = self._net.detect(bgr)
        if faces is None:
            return []
        detections = []
        for face in faces:
            x, y, w, h = face[:4]
            box = (int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
            detections.append(Detection(box, float(face[14]), face[4:14].reshape(5, 2).astype(np.float32)).scaled(1 / factor))
        return detections
