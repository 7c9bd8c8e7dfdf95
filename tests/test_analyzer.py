"""The Analyzer end to end on made-up inputs built from scikit-image's astronaut photo.

The astronaut (Eileen Collins, 512x512, bundled with scikit-image) has one face, about
90 px wide at (179, 83, 266, 170). The fixture uses the HOG detector with upsample=0:
with upsample=1 HOG also fires, weakly (score ~0.12), on the round mission patch on her
suit. The shipped heads are placeholders, so nothing here checks accuracy, only the
schema, the plumbing and the robustness.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from face import Analyzer, HowoldError
from face.data import GENDERS, RACES
from face.readout import AGE_GROUPS, age_group_label

ADIENCE_GROUPS = [age_group_label(group) for group in range(len(AGE_GROUPS))]  # "0-2", ..., "60-100"

FACE_BOX = (179, 83, 266, 170)  # HOG's box at upsample=0


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(detector="hog", upsample=0)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


@pytest.fixture(scope="module")
def astronaut_faces(analyzer, astronaut) -> list[dict]:
    return analyzer.analyze(astronaut)


def check_face(face: dict, width: int, height: int) -> None:
    """Every documented field, with its type and range."""
    assert set(face) >= {"box", "detection_confidence", "age", "age_interval", "age_group", "gender", "gender_confidence", "race", "race_confidences"}
    left, top, right, bottom = face["box"]
    assert all(isinstance(v, int) for v in face["box"])
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert face["detection_confidence"] is None or isinstance(face["detection_confidence"], float)
    assert isinstance(face["age"], float) and 0 <= face["age"] <= 100
    low, high = face["age_interval"]
    assert 0 <= low <= face["age"] <= high <= 100
    assert face["age_group"] in ADIENCE_GROUPS and 1 / len(ADIENCE_GROUPS) <= face["age_group_confidence"] <= 1.0
    assert face["gender"] in GENDERS and 0.5 <= face["gender_confidence"] <= 1.0
    assert face["race"] in RACES and set(face["race_confidences"]) == set(RACES)
    assert abs(sum(face["race_confidences"].values()) - 1.0) < 0.01
    assert face["race"] == max(face["race_confidences"], key=face["race_confidences"].get)


def same_faces(a: list[dict], b: list[dict], tolerance: float = 1e-3) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x["box"] != y["box"] or x["gender"] != y["gender"] or x["race"] != y["race"] or abs(x["age"] - y["age"]) > tolerance:
            return False
    return True


def test_astronaut_one_face_full_schema(analyzer, astronaut, astronaut_faces):
    assert len(astronaut_faces) == 1
    face = astronaut_faces[0]
    check_face(face, 512, 512)
    assert isinstance(face["detection_confidence"], float) and face["detection_confidence"] > 0.5
    left, top, right, bottom = face["box"]
    assert abs(left - FACE_BOX[0]) < 20 and abs(top - FACE_BOX[1]) < 20 and abs(right - FACE_BOX[2]) < 20 and abs(bottom - FACE_BOX[3]) < 20
    assert json.loads(json.dumps(astronaut_faces)) == astronaut_faces  # plain JSON types only
    assert set(analyzer.last_timings) == {"detect_ms", "predict_ms"}


def test_blank_images_have_no_faces(analyzer):
    assert analyzer.analyze(np.zeros((200, 300, 3), np.uint8)) == []
    assert analyzer.analyze(np.full((64, 64), 255, np.uint8)) == []
    noise = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert analyzer.analyze(noise) == []


def test_given_boxes_skip_detection(analyzer, astronaut, astronaut_faces):
    faces = analyzer.analyze(astronaut, boxes=[[20, 20, 80, 80], astronaut_faces[0]["box"]])
    assert len(faces) == 2
    assert all(face["detection_confidence"] is None for face in faces)
    assert faces[0]["box"] == astronaut_faces[0]["box"]  # largest first; same box as detected
    assert abs(faces[0]["age"] - astronaut_faces[0]["age"]) < 1e-6
    for face in faces:
        check_face(face, 512, 512)
    assert analyzer.analyze(astronaut, boxes=[]) == []


def test_whole_image_box_on_a_face_crop(analyzer, astronaut):
    """A face crop (as UTKFace's) analysed with a box covering the whole image."""
    crop = np.ascontiguousarray(astronaut[60:200, 155:290])
    height, width = crop.shape[:2]
    faces = analyzer.analyze(crop, boxes=[(0, 0, width, height)])
    assert len(faces) == 1
    check_face(faces[0], width, height)
    assert faces[0]["box"] == [0, 0, width, height]


@pytest.mark.parametrize(
    "box",
    [
        [100, 100, 50, 150],  # right < left
        [100, 100, 150, 100],  # empty height
        [600, 600, 700, 700],  # outside the image
        [-200, -200, -100, -100],  # outside, the other side
        [1, 2, 3],  # not four numbers
        [100, 100, 100, 150],  # empty width
        [600, 10, 700, 100],  # right of the image (512x512), and only that
        [10, 600, 100, 700],  # below it
        [-100, 10, -50, 100],  # left of it
        [10, -100, 100, -50],  # above it
        [-10, 10, 0, 100],  # ends where the image begins
        [10, -10, 100, 0],
        [512, 10, 600, 100],  # begins where it ends
        [10, 512, 100, 600],
    ],
)
def test_invalid_box_raises(analyzer, astronaut, box):
    with pytest.raises(HowoldError, match="box"):
        analyzer.analyze(astronaut, boxes=[box])


def test_boxes_overlapping_the_image_by_one_pixel_are_analysed(analyzer, astronaut):
    for box in ([-10, 10, 1, 100], [10, -10, 100, 1], [511, 10, 600, 100], [10, 511, 100, 600]):
        (face,) = analyzer.analyze(astronaut, boxes=[box])
        check_face(face, 512, 512)


def test_oversampled_centre_is_the_plain_chip(analyzer, astronaut, monkeypatch):
    """Oversampling cuts five chips from one 1.14x bigger at the same scale: its centre is
    the plain chip (mean difference ~4.5 grey levels here; another size or padding: 23+)."""
    detections = analyzer.detect(astronaut)
    plain = analyzer.chips(astronaut, detections).astype(np.float32)
    monkeypatch.setattr(analyzer, "tta", ("oversample",))
    crops = analyzer.chips(astronaut, detections).astype(np.float32)
    assert crops.shape == (5 * len(plain), *plain.shape[1:])
    assert np.abs(crops[4] - plain[0]).mean() < 10


def test_chips_follow_the_detectors_landmarks(analyzer, astronaut, monkeypatch):
    """YuNet's five landmarks align the chips (alignment "landmarks"); "dlib" ignores them."""
    from face.detection import FaceDetector

    detections = FaceDetector("yunet").detect(astronaut)
    assert detections[0].landmarks is not None
    for tta in ((), ("oversample",)):
        monkeypatch.setattr(analyzer, "tta", tta)
        from_landmarks = analyzer.chips(astronaut, detections).astype(np.float32)
        monkeypatch.setattr(analyzer, "alignment", "dlib")
        from_dlib = analyzer.chips(astronaut, detections).astype(np.float32)
        monkeypatch.setattr(analyzer, "alignment", "landmarks")
        assert np.abs(from_landmarks - from_dlib).mean() > 5, tta  # ~19 grey levels apart here
    boxes, landmarks = [d.box for d in detections], [d.landmarks for d in detections]
    monkeypatch.setattr(analyzer, "tta", ())
    assert np.array_equal(analyzer.chips(astronaut, detections), analyzer.aligner.chips(astronaut, boxes, analyzer.backbone.chip, landmarks))


def test_analyze_many_reports_errors_per_item(analyzer, astronaut, tmp_path):
    good_path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(good_path)
    inputs = [astronaut, b"\x89PNG\r\n\x1a\n garbage bytes", tmp_path / "missing.jpg", str(good_path), np.zeros((50, 50, 3), np.uint8)]
    results = analyzer.analyze_many(inputs)
    assert len(results) == len(inputs)
    assert all("source" in r for r in results)
    assert len(results[0]["faces"]) == 1 and "error" not in results[0]
    assert "faces" not in results[1] and "bytes" in results[1]["error"]
    assert "faces" not in results[2] and "missing.jpg" in results[2]["error"]
    assert results[3]["source"] == str(good_path) and same_faces(results[3]["faces"], results[0]["faces"])
    assert results[4]["faces"] == []
    json.dumps(results)


def test_flip_and_oversample_tta(analyzer, astronaut, astronaut_faces, monkeypatch):
    for tta in [("flip",), ("oversample",), ("flip", "oversample")]:
        monkeypatch.setattr(analyzer, "tta", tta)
        faces = analyzer.analyze(astronaut)
        assert len(faces) == 1, tta
        check_face(faces[0], 512, 512)
        assert faces[0]["box"] == astronaut_faces[0]["box"]
    with pytest.raises(ValueError, match="test-time augmentation"):
        Analyzer(tta=["mirror"])


def test_input_kinds_agree(analyzer, astronaut, astronaut_faces, tmp_path):
    path = tmp_path / "astronaut.png"  # lossless, so every kind holds the same pixels
    Image.fromarray(astronaut).save(path)
    data = path.read_bytes()
    with Image.open(path) as pil:
        pil.load()
        kinds = {"str": str(path), "path": path, "bytes": data, "bytearray": bytearray(data), "pil": pil, "numpy": astronaut}
        for name, source in kinds.items():
            assert same_faces(analyzer.analyze(source), astronaut_faces, tolerance=1e-4), name
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG", quality=95)
    # Lossy: the same face (largest first), nearly the same answer. (JPEG noise can make HOG,
    # at its threshold of 0, also fire weakly on the mission patch, so only the first is checked.)
    jpeg_faces = analyzer.analyze(buffer.getvalue())
    assert jpeg_faces and abs(jpeg_faces[0]["box"][0] - astronaut_faces[0]["box"][0]) < 10
    assert abs(jpeg_faces[0]["age"] - astronaut_faces[0]["age"]) < 10


def test_face_at_the_image_border(analyzer, astronaut, astronaut_faces):
    left, top, right, bottom = astronaut_faces[0]["box"]
    # Cut the image through the face: its left part is gone, the rest touches the left edge.
    cut = left + (right - left) // 6
    cropped = np.ascontiguousarray(astronaut[:, cut:])
    faces = analyzer.analyze(cropped)
    assert len(faces) <= 1
    for face in faces:
        check_face(face, cropped.shape[1], cropped.shape[0])
        assert face["box"][0] < 15  # touches (or nearly) the left edge
    # A given box reaching past the border is clipped, and the face still analysed.
    faces = analyzer.analyze(cropped, boxes=[(left - cut - 5, top, right - cut, bottom)])
    assert len(faces) == 1 and faces[0]["box"][0] == 0
    check_face(faces[0], cropped.shape[1], cropped.shape[0])
    # Top edge too: the crop starts inside the forehead.
    top_cut = np.ascontiguousarray(astronaut[top + 10 :, :])
    for face in analyzer.analyze(top_cut):
        check_face(face, top_cut.shape[1], top_cut.shape[0])
    faces = analyzer.analyze(top_cut, boxes=[(left, -10, right, bottom - top - 10)])
    assert len(faces) == 1 and faces[0]["box"][1] == 0


def test_flip_tta_averages_each_face_with_its_mirror_image(analyzer, astronaut, monkeypatch):
    """Flip TTA is the mean of the face and its left-right mirror, so a face and its mirror get one answer."""
    chips = analyzer.chips(astronaut, analyzer.detect(astronaut))
    mirrored = np.stack([np.fliplr(chip) for chip in chips])  # left-right, each chip on its own

    def plain(batch):
        return analyzer.heads.predict(analyzer.heads.features_of(analyzer.backbone, np.ascontiguousarray(batch)))

    face, mirror = plain(chips), plain(mirrored)
    assert not np.allclose(face["age"], mirror["age"], atol=1e-4)  # the mirror is another input to the network
    # without TTA: the network's own answer for the chips, no mirror in it
    monkeypatch.setattr(analyzer, "tta", ())
    unflipped = analyzer.predict_probabilities(chips)
    for name, probabilities in analyzer.runtime.predict(np.ascontiguousarray(chips)).items():
        assert np.allclose(unflipped[name], probabilities, atol=1e-6), name
    assert len(analyzer.predict_chips(np.concatenate([chips, mirrored]))) == 2 * len(chips)  # one answer per chip
    monkeypatch.setattr(analyzer, "tta", ("flip",))
    flipped = analyzer.predict_probabilities(chips)
    for name in ("age", "gender", "race"):
        assert np.allclose(flipped[name], (face[name] + mirror[name]) / 2, atol=1e-4), name
        assert np.allclose(analyzer.predict_probabilities(mirrored)[name], flipped[name], atol=1e-4), name
    answer = analyzer.analyze(astronaut)[0]
    readout = analyzer.age_readout  # the model's age readout, on the averaged distribution
    assert answer["age"] == pytest.approx(float(readout.point_of(readout.apply((face["age"] + mirror["age"]) / 2))[0]), abs=0.06)


def test_oversample_takes_the_four_corners_and_the_centre():
    from face.analyzer import oversample

    chips = np.arange(2 * 7 * 7 * 3, dtype=np.int32).reshape(2, 7, 7, 3)  # two 7x7 chips, every pixel different
    crops = oversample(chips, 4)
    assert crops.shape == (10, 4, 4, 3)
    for index, chip in enumerate(chips):
        expected = [chip[:4, :4], chip[:4, 3:], chip[3:, :4], chip[3:, 3:], chip[1:5, 1:5]]  # centre: offset 3 // 2
        assert all(np.array_equal(crop, want) for crop, want in zip(crops[5 * index : 5 * index + 5], expected))
