"""Aligned face chips, the way dlib cuts them (as face_recognition does), from either of two
sources of five landmarks:

- dlib's 5-point shape predictor, run inside a face box (any detector's, or a given box);
- the detector's own five landmarks (YuNet's eyes, nose tip and mouth corners), mapped by a
  similarity transform onto where those points fall in dlib's chips on average
  (`YUNET_TEMPLATE`, fitted by benchmarks/bench_alignment.py on UTKFace's training split).
  That skips the shape predictor: one cv2.warpAffine a face.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from .backbones.base import ChipSpec
from .backbones.dlib_resnet import dlib_model_path

Box = tuple[int, int, int, int]  # left, top, right, bottom in pixels

#: YuNet's five landmarks (right eye, left eye, nose tip, right and left mouth corner) in a
#: dlib chip without padding: (0, 0) and (1, 1) are the corners of the padding-0 chip; a chip
#: with padding p spans -p .. 1 + p. Fitted by `python benchmarks/bench_alignment.py --fit`.
YUNET_TEMPLATE = np.array(
    [
        [0.2144, 0.2003],
        [0.7571, 0.2067],
        [0.4707, 0.4963],
        [0.2504, 0.7453],
        [0.7030, 0.7515],
    ],
    np.float32,
)

#: How much each landmark counts in the fit. dlib places its chips by four eye corners and
#: the base of the nose, never the mouth, so the eyes count double and the mouth corners half:
#: on UTKFace's validation split that gave age MAE 4.560, gender 94.55%, race 88.29% against
#: 4.593 / 94.79% / 87.99% with equal weights, and 4.565 / 94.69% / 88.33% with dlib's own
#: alignment in the same boxes (`python benchmarks/bench_alignment.py --weights ...`).
LANDMARK_WEIGHTS = np.array([2.0, 2.0, 1.0, 0.5, 0.5])


def similarity_transform(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The 2x3 rotation + uniform scale + shift that maps `source` points closest to `target`
    in weighted least squares (Umeyama's closed form); exact and deterministic, unlike RANSAC fits."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    weights = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    weights = weights / weights.sum()
    source_mean, target_mean = weights @ source, weights @ target
    s, t = source - source_mean, target - target_mean
    # complex-number form: target ~ z * source with z = scale * e^(i angle)
    a = (weights * (s[:, 0] * t[:, 0] + s[:, 1] * t[:, 1])).sum()
    b = (weights * (s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0])).sum()
    norm = (weights[:, None] * s**2).sum()
    matrix = np.array([[a, -b], [b, a]]) / norm
    return np.hstack([matrix, (target_mean - matrix @ source_mean)[:, None]])


def template_in_chip(spec: ChipSpec, template: np.ndarray = YUNET_TEMPLATE) -> np.ndarray:
    """Template points in the pixels of a chip of `spec`'s size and padding."""
    return (template + spec.padding) / (1 + 2 * spec.padding) * (spec.size - 1)


def warp_chip(image: np.ndarray, landmarks: np.ndarray, spec: ChipSpec, weights: np.ndarray | None = None) -> np.ndarray:
    """The chip whose template points land on `landmarks`; shrinking more than 2x goes
    through an area-averaged resize first, as dlib's pyramid does, so small chips of big
    faces do not alias."""
    weights = LANDMARK_WEIGHTS if weights is None else weights
    transform = similarity_transform(landmarks, template_in_chip(spec), weights)
    scale = float(np.hypot(*transform[:, 0]))
    if scale < 0.5:
        shrink = 2 * scale  # leaves a factor of 1/2 for the warp
        inverse = cv2.invertAffineTransform(transform)
        corners = np.array([[0, 0, 1], [spec.size, 0, 1], [0, spec.size, 1], [spec.size, spec.size, 1]], np.float64) @ inverse.T
        left, top = np.maximum(np.floor(corners.min(axis=0)) - 2, 0).astype(int)
        right, bottom = np.minimum(np.ceil(corners.max(axis=0)) + 2, image.shape[1::-1]).astype(int)
        if right > left and bottom > top:
            region = image[top:bottom, left:right]
            size = (max(1, round(region.shape[1] * shrink)), max(1, round(region.shape[0] * shrink)))
            image = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
            fx, fy = size[0] / region.shape[1], size[1] / region.shape[0]
            landmarks = (landmarks - [left, top]) * [fx, fy]
            transform = similarity_transform(landmarks, template_in_chip(spec), weights)
    return cv2.warpAffine(image, transform, (spec.size, spec.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


@dataclass
class Aligner:
    """Finds five landmarks inside a face box and cuts out the aligned chip a backbone wants."""

    def __post_init__(self) -> None:
        self._predictor = None
        self._lock = threading.Lock()

    def _load_dlib(self) -> None:
        """dlib and its shape predictor, on first use: faces with the detector's own
        landmarks never need them, and loading costs about a second of start-up."""
        with self._lock:
            if self._predictor is None:
                import dlib

                self._dlib = dlib
                self._predictor = dlib.shape_predictor(str(dlib_model_path("landmarks5")))

    def landmarks(self, image: np.ndarray, box: Box):
        self._load_dlib()
        left, top, right, bottom = (int(round(v)) for v in box)
        with self._lock:
            return self._predictor(image, self._dlib.rectangle(left, top, right, bottom))

    def chips(self, image: np.ndarray, boxes: list[Box], spec: ChipSpec, landmarks: list[np.ndarray | None] | None = None) -> np.ndarray:
        """Aligned chips (N, size, size, 3) uint8, one per box; boxes may reach past the border.

        A face with detector `landmarks` is warped onto the template; the others go through
        dlib's shape predictor and dlib's own chip extraction.
        """
        if not boxes:
            return np.zeros((0, spec.size, spec.size, 3), np.uint8)
        image = np.ascontiguousarray(image, dtype=np.uint8)
        landmarks = landmarks or [None] * len(boxes)
        chips: list[np.ndarray | None] = [None if points is None else warp_chip(image, points, spec) for points in landmarks]
        by_dlib = [i for i, chip in enumerate(chips) if chip is None]
        if by_dlib:
            self._load_dlib()
            shapes = self._dlib.full_object_detections()
            for i in by_dlib:
                shapes.append(self.landmarks(image, boxes[i]))
            for i, chip in zip(by_dlib, self._dlib.get_face_chips(image, shapes, size=spec.size, padding=spec.padding)):
                chips[i] = np.asarray(chip, np.uint8)
        return np.stack(chips)


def crop_box(image: np.ndarray, inset: float = 0.0) -> Box:
    """The box of an image that already is a face crop (as UTKFace's), optionally inset."""
    height, width = image.shape[:2]
    dx, dy = int(width * inset), int(height * inset)
    return (dx, dy, width - dx, height - dy)
