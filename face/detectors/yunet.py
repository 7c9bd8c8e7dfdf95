"""YuNet (Shiqi Yu et al., 2023): a 230 KB CNN face detector with five landmarks, run by
OpenCV's `cv2.FaceDetectorYN`.

The model file ships in `weights/` (MIT licence beside it) and is checked against a pinned
sha256 at load, so a truncated or swapped file is a WeightsError that names it, not a
crash inside OpenCV.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
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
#: Images are padded (black, right and bottom) to multiples of this many pixels, as YuNet
#: pads them itself. OpenCV re-plans the network for every new input size, which costs
#: tens of milliseconds, so each padded size keeps a network of its own (the last
#: `MAX_SIZES`): photos of a size seen before, in any order, pay no planning.
SIZE_STEP = 32
MAX_SIZES = 8


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
    default_upsample = 0  # it finds faces of about 10 px as it sees them (benchmarks/bench_detection.py)

    def __init__(self, threshold: float | None = None, model: str | Path | None = None, sha256: str | None = MODEL_SHA256, nms_threshold: float = 0.3):
        path = Path(model) if model else default_model_path()
        if sha256 is not None:
            check_model_file(path, sha256)
        super().__init__(threshold)
        self._path, self._nms_threshold = path, nms_threshold
        self._nets: OrderedDict[tuple[int, int], cv2.FaceDetectorYN] = OrderedDict()
        self._net((SIZE_STEP, SIZE_STEP))  # a file OpenCV cannot read fails here, not on the first photo

    def _net(self, size: tuple[int, int]) -> cv2.FaceDetectorYN:
        """The network planned for input `size` (width, height); the least recently used goes."""
        if size in self._nets:
            self._nets.move_to_end(size)
            return self._nets[size]
        try:
            net = cv2.FaceDetectorYN.create(str(self._path), "", size, self.threshold, self._nms_threshold, 5000)
        except cv2.error as error:
            raise WeightsError(f"{self._path}: OpenCV cannot load it as a YuNet model ({str(error).strip().splitlines()[-1]})") from None
        self._nets[size] = net
        if len(self._nets) > MAX_SIZES:
            self._nets.popitem(last=False)
        return net

    def warm_up(self, sizes: list[tuple[int, int]]) -> None:
        for width, height in sizes:
            self.find(np.zeros((height, width, 3), np.uint8))

    def find(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        factor = 2**upsample
        if factor != 1:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        height, width = image.shape[:2]
        if min(height, width) < MIN_SIDE:
            return []
        padded = (-(-width // SIZE_STEP) * SIZE_STEP, -(-height // SIZE_STEP) * SIZE_STEP)
        bgr = np.zeros((padded[1], padded[0], 3), np.uint8)
        bgr[:height, :width] = image[:, :, ::-1]
        with self._lock:
            _, faces = self._net(padded).detect(bgr)
        if faces is None:
            return []
        detections = []
        for face in faces:
            x, y, w, h = face[:4]
            box = (int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
            detections.append(Detection(box, float(face[14]), face[4:14].reshape(5, 2).astype(np.float32)).scaled(1 / factor))
        return detections
