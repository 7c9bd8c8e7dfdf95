"""Chips from five landmarks: the weighted similarity fit, the warp, and dlib's own chips."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from face.alignment import LANDMARK_WEIGHTS, YUNET_TEMPLATE, Aligner, crop_box, similarity_transform, template_in_chip, warp_chip
from face.backbones.base import ChipSpec

from conftest import DEMO

SPEC = ChipSpec(150, 0.25)


@pytest.fixture(scope="module")
def real_faces() -> list[tuple[np.ndarray, tuple, np.ndarray]]:
    """(image, box, YuNet's five landmarks) of real faces: scikit-image's astronaut, and the
    demo group photos' faces where ../shared/demo is present (49 faces in all)."""
    from skimage import data

    from face.detection import FaceDetector
    from face.images import load_image

    images = [data.astronaut()] + [load_image(path) for path in sorted(DEMO.glob("*.[jp][pn]g"))]
    detector = FaceDetector("yunet")
    faces = [(image, d.box, np.asarray(d.landmarks, np.float64)) for image in images for d in detector.detect(image) if d.landmarks is not None]
    assert len(faces) >= 1
    return faces


def rotation(angle: float, scale: float, shift) -> np.ndarray:
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]])


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:, :2].T + transform[:, 2]


def test_similarity_transform_recovers_a_known_similarity_whatever_the_weights():
    points = np.random.default_rng(0).uniform(0, 300, (5, 2))
    known = rotation(0.3, 1.7, (12.0, -40.0))
    for weights in (None, LANDMARK_WEIGHTS, np.array([5.0, 0.1, 1.0, 2.0, 3.0]), 10 * LANDMARK_WEIGHTS):
        assert np.allclose(similarity_transform(points, apply(known, points), weights), known, atol=1e-9)
    # points that no similarity maps exactly: scaling every weight alike changes nothing
    target = apply(known, points) + np.random.default_rng(1).normal(0, 5, (5, 2))
    assert np.allclose(similarity_transform(points, target, LANDMARK_WEIGHTS), similarity_transform(points, target, 7 * LANDMARK_WEIGHTS), atol=1e-12)
    assert not np.allclose(similarity_transform(points, target, LANDMARK_WEIGHTS), similarity_transform(points, target), atol=1e-3)


def test_the_weights_pull_the_fit_onto_the_eyes_of_real_faces(real_faces):
    """LANDMARK_WEIGHTS were chosen by measurement (eyes 2, nose 1, mouth corners 0.5: the best
    age MAE and race accuracy of the weightings bench_alignment.py compared on UTKFace). On real
    faces, whose five points never form the template exactly, they fit the mouth corners worse
    and the eyes better than equal weights: on every face the mouth corners' squared misfit
    is larger, and over all faces the eyes' is smaller (on 48 of the 49 faces of the demo
    photos and the astronaut). Dropping the weights, or making them equal, fails this."""
    assert LANDMARK_WEIGHTS.tolist() == [2.0, 2.0, 1.0, 0.5, 0.5]  # right eye, left eye, nose tip, mouth corners
    target = template_in_chip(SPEC)
    eyes = {"chosen": 0.0, "equal": 0.0}
    for _, _, landmarks in real_faces:
        misfit = {}
        for name, weights in (("chosen", LANDMARK_WEIGHTS), ("equal", np.ones(5))):
            misfit[name] = ((apply(similarity_transform(landmarks, target, weights), landmarks) - target) ** 2).sum(axis=1)
            eyes[name] += misfit[name][:2].sum()
        assert misfit["chosen"][3:].sum() > 1.05 * misfit["equal"][3:].sum()
    assert eyes["chosen"] < 0.9 * eyes["equal"]


def test_chips_are_cut_with_the_measured_weights(real_faces):
    image, _, landmarks = real_faces[0]  # the astronaut
    chip = warp_chip(image, landmarks, SPEC)
    assert np.array_equal(chip, warp_chip(image, landmarks, SPEC, LANDMARK_WEIGHTS))
    equal = warp_chip(image, landmarks, SPEC, np.ones(5))
    assert np.abs(chip.astype(np.float32) - equal).mean() > 1.0  # grey levels; the same chip would be 0


def dotted_face(size: int, scale: float, angle: float, centre=None, moved=None) -> tuple[np.ndarray, np.ndarray]:
    """A grey image with five coloured dots where a face's five landmarks would be: the
    template (its points `moved` by that many template units), rotated, scaled to `scale`
    image pixels a template unit, around `centre` (default the image's)."""
    template = YUNET_TEMPLATE.astype(np.float64) - 0.5 + (0 if moved is None else moved)
    cos, sin = np.cos(angle), np.sin(angle)
    points = template @ (scale * np.array([[cos, sin], [-sin, cos]])) + (size / 2 if centre is None else np.asarray(centre, np.float64))
    image = np.full((size, size, 3), 90, np.uint8)
    for point, colour in zip(points, COLOURS):
        cv2.circle(image, tuple(int(round(v)) for v in point), max(2, int(scale / 40)), colour, -1, lineType=cv2.LINE_AA)
    return image, points


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def dot_centres(chip: np.ndarray) -> np.ndarray:
    centres = []
    for colour in COLOURS:
        distance = np.abs(chip.astype(np.int32) - colour).sum(axis=2)
        weight = np.clip(150 - distance, 0, None).astype(np.float64)
        ys, xs = np.indices(weight.shape)
        centres.append([(xs * weight).sum() / weight.sum(), (ys * weight).sum() / weight.sum()])
    return np.array(centres)


# a small face (warped directly), a big one inside the image and a big one cut by its left edge
# (both shrunk ~4.5x first, area-averaged: the second through a region narrower than tall)
FACES = [(120.0, 300, None), (900.0, 2600, None), (900.0, 2600, (420.0, 1300.0))]


@pytest.mark.parametrize("scale, size, centre", FACES)
def test_warp_puts_the_landmarks_where_the_template_says(scale, size, centre):
    image, points = dotted_face(size, scale, 0.35, centre)
    chip = warp_chip(image, points, SPEC)
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    assert np.abs(dot_centres(chip) - template_in_chip(SPEC)).max() < 1.0  # pixels
    inside = (chip == 90).all(axis=2)  # the grey of the image, not black from outside it
    if centre is None:
        assert inside[[0, -1]].all() and inside[:, [0, -1]].all()  # every edge of the chip is in the image
    else:
        assert (chip == 0).all(axis=2).sum() > 5 * 150 and inside[:, -1].all()  # past the image's left edge: black


@pytest.mark.parametrize("scale, size, centre", FACES)
def test_landmarks_off_the_template_are_fitted_with_the_weights(scale, size, centre):
    """Mouth corners 0.08 template units low and apart: each dot lands where the weighted fit
    puts it, 2+ pixels from where equal weights would (small and shrunk faces alike)."""
    moved = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-0.08, 0.08], [0.08, 0.08]])
    image, points = dotted_face(size, scale, 0.35, centre, moved)
    chip = warp_chip(image, points, SPEC)
    weighted = apply(similarity_transform(points, template_in_chip(SPEC), LANDMARK_WEIGHTS), points)
    equal = apply(similarity_transform(points, template_in_chip(SPEC), np.ones(5)), points)
    assert np.abs(dot_centres(chip) - weighted).max() < 1.0
    assert np.abs(weighted - equal).max() > 2.0


def test_a_small_face_is_one_bilinear_warp():
    image, points = dotted_face(300, 120.0, 0.35)  # about 0.8 chip pixels an image pixel: no shrinking first
    transform = similarity_transform(points, template_in_chip(SPEC), LANDMARK_WEIGHTS)
    expected = cv2.warpAffine(image, transform, (150, 150), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert np.array_equal(warp_chip(image, points, SPEC), expected)


def test_a_big_face_is_area_averaged_before_the_warp_so_fine_detail_does_not_alias():
    """One-pixel black and white stripes across a face 7.5x bigger than the chip: averaged,
    they are a flat grey; sampled (a bilinear warp alone, or a resize that samples), they
    alias into bands."""
    image, points = dotted_face(2600, 900.0, 0.0)
    image[:, ::2], image[:, 1::2] = 0, 255
    chip = warp_chip(image, points, SPEC).astype(np.float32)
    # 8.2 here; shrunk to 3x the chip's scale first instead of 2x: 17; sampled: 51; no shrinking first: 74
    assert chip.std() < 12 and abs(chip.mean() - 127.5) < 4


def test_a_big_face_whose_chip_lies_outside_the_image_is_black():
    image, points = dotted_face(2600, 900.0, 0.0)
    chip = warp_chip(image[:400], points, SPEC)  # the face's landmarks all below the image's last row
    assert chip.shape == (150, 150, 3) and not chip.any()


def test_template_in_chip_follows_size_and_padding():
    assert np.allclose(template_in_chip(ChipSpec(101, 0.0)), YUNET_TEMPLATE * 100)
    assert np.allclose(template_in_chip(ChipSpec(151, 0.25)), (YUNET_TEMPLATE + 0.25) / 1.5 * 150)
    assert np.allclose(template_in_chip(ChipSpec(11, 0.5), np.array([[0.0, 1.0]])), [[2.5, 7.5]])


def test_aligner_cuts_landmark_chips_and_dlib_chips_in_box_order(real_faces):
    import dlib

    image, box, landmarks = real_faces[0]
    aligner = Aligner()
    spec = ChipSpec(112, 0.4)  # not dlib's defaults (150, 0.25), so that they must be passed
    chips = aligner.chips(image, [box, box, box], spec, [None, landmarks, None])
    assert chips.shape == (3, 112, 112, 3) and chips.dtype == np.uint8
    assert np.array_equal(chips[1], warp_chip(image, landmarks, spec))
    own = np.asarray(dlib.get_face_chip(image, aligner.landmarks(image, box), size=112, padding=0.4))
    assert np.array_equal(chips[0], own) and np.array_equal(chips[2], own)
    assert np.array_equal(aligner.chips(image, [box], spec), own[None])  # no landmarks at all: dlib's
    assert np.array_equal(aligner.chips(image.astype(np.float64), [box], spec), own[None])  # any numeric image
    empty = aligner.chips(image, [], spec)
    assert empty.shape == (0, 112, 112, 3) and empty.dtype == np.uint8
    # dlib's landmarks are found inside the box given (rounded to pixels), not elsewhere
    left, top, right, bottom = box
    moved = aligner.landmarks(image, (left + 0.4, top - 0.4, right + 0.2, bottom))
    assert [(p.x, p.y) for p in moved.parts()] == [(p.x, p.y) for p in aligner.landmarks(image, box).parts()]
    assert moved.rect.left() == round(left + 0.4) and moved.rect.bottom() == bottom


def test_crop_box_is_the_image_or_its_inset():
    image = np.zeros((100, 200, 3), np.uint8)
    assert crop_box(image) == (0, 0, 200, 100)
    assert crop_box(image, 0.1) == (20, 10, 180, 90)
