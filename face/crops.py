"""Where the face is in a dataset's image, before alignment.

Aligned crops (UTKFace's) are the face: the whole image is its box. Loose crops (FairFace's,
cut with a margin around the face and not aligned) go through a face detector like any
photo; when it finds nothing, the box is the crop minus its margin, which is where the
cropping put the face.
"""
from __future__ import annotations

import numpy as np

from .alignment import Box, crop_box
from .detection import box_area


def margin_box(image: np.ndarray, margin: float) -> Box:
    """The face box of a crop that grew the face by `margin` of its side on every side.

    The crop's side is (1 + 2 * margin) face sides, so the face lies `margin / (1 + 2 * margin)`
    of the crop's side in from each border (1/6 for FairFace's 0.25).
    """
    return crop_box(image, inset=margin / (1 + 2 * margin))


def overlap(first: Box, second: Box) -> float:
    """Intersection over union of two boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (box_area(first) + box_area(second) - inter)


def loose_crop_face(image: np.ndarray, detector, margin: float) -> tuple[Box, np.ndarray | None, bool]:
    """(box, landmarks, detected): the detection that overlaps the crop's expected face most,
    with its landmarks (None from a detector without them), else that expected box (the crop
    minus its margin) and no landmarks. Training chips are then cut the way the Analyzer cuts
    them from the same detections."""
    expected = margin_box(image, margin)
    touching = [d for d in detector.detect(image) if overlap(d.box, expected) > 0]
    if not touching:
        return expected, None, False
    best = max(touching, key=lambda d: overlap(d.box, expected))
    return tuple(int(v) for v in best.box), best.landmarks, True
