"""YuNet (Shiqi Yu et al., 2023): a 230 KB CNN face detector with five landmarks.

The network runs in ONNX Runtime and its outputs are decoded here as OpenCV's
`cv2.FaceDetectorYN` decodes them (same boxes, landmarks and scores to 1e-4 px on the demo
photos): twice OpenCV's speed on these cores, and a new image size costs no re-planning
(OpenCV's cost tens of milliseconds per size). The model file ships in `weights/` (MIT
licence beside it) and is checked against a pinned sha256 at load, so a truncated or
swapped file is a WeightsError that names it, not a crash inside the runtime.
"""
from __future__ import annotations

import hashlib
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
#: Images are padded (black, right and bottom) to multiples of its largest stride.
SIZE_STEP = 32
#: The feature maps' strides; each cell of each map proposes one face.
STRIDES = (8, 16, 32)
#: At most this many faces are kept by non-maximum suppression, as in OpenCV.
TOP_K = 5000


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
        from ..onnx_session import create_session

        try:
            self._session = create_session(str(path), spin=False)
        except Exception as error:  # onnxruntime raises its own exception kinds for unreadable models
            raise WeightsError(f"{path}: ONNX Runtime cannot load it as a YuNet model ({str(error).strip().splitlines()[-1][:200]})") from None
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        expected = {f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES}
        if set(self._outputs) != expected:
            raise WeightsError(f"{path}: outputs {sorted(self._outputs)} are not YuNet's {sorted(expected)}")

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
        padded_width, padded_height = -(-width // SIZE_STEP) * SIZE_STEP, -(-height // SIZE_STEP) * SIZE_STEP
        blob = np.zeros((1, 3, padded_height, padded_width), np.float32)  # BGR, 0..255, as OpenCV feeds it
        blob[0, :, :height, :width] = image[:, :, ::-1].transpose(2, 0, 1)
        outputs = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: blob})))
        boxes, landmarks, scores = _decode(outputs, padded_width, self.threshold)
        if not len(scores):
            return []
        kept = np.asarray(cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.threshold, self._nms_threshold, top_k=TOP_K), np.int64).reshape(-1)
        detections = []
        for index in kept:
            x, y, w, h = boxes[index]
            box = (int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
            detections.append(Detection(box, float(scores[index]), landmarks[index]).scaled(1 / factor))
        return detections


def _decode(outputs: dict[str, np.ndarray], padded_width: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, w, h) boxes, (5, 2) landmarks and scores of the cells scoring at least
    `threshold`. Each stride's map has one cell per stride x stride pixels, row by row; a
    cell's score is sqrt(class * objectness); its box centre and landmarks are offsets from
    the cell's corner and its size a log-scale, all in units of the stride."""
    boxes, landmarks, scores = [], [], []
    for stride in STRIDES:
        score = np.sqrt(np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1) * np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1))
        cells = np.nonzero(score >= threshold)[0]
        if not len(cells):
            continue
        corner = np.stack([cells % (padded_width // stride), cells // (padded_width // stride)], axis=1).astype(np.float32)
        offsets = outputs[f"bbox_{stride}"][0, cells]
        centre, size = (corner + offsets[:, :2]) * stride, np.exp(offsets[:, 2:]) * stride
        boxes.append(np.concatenate([centre - size / 2, size], axis=1))
        landmarks.append((outputs[f"kps_{stride}"][0, cells].reshape(-1, 5, 2) + corner[:, None, :]) * stride)
        scores.append(score[cells])
    if not scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(boxes), np.concatenate(landmarks).astype(np.float32), np.concatenate(scores)
