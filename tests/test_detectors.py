"""The detector registry and YuNet, the default, on real images (scikit-image's bundled
photos; the demo photos where ../shared is present)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face import Analyzer, WeightsError
from face.errors import ConfigError
from face.detection import FaceDetector
from face.detectors import DEFAULT_DETECTOR, create_detector, list_detectors
from face.detectors.yunet import default_model_path

from conftest import DEMO

ASTRONAUT_FACE = (178, 63, 268, 176)  # YuNet's box for Eileen Collins' face


def rgb(image: np.ndarray) -> np.ndarray:
    image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[:, :, :3]
    return np.ascontiguousarray(image, dtype=np.uint8)


@pytest.fixture(scope="module")
def yunet() -> FaceDetector:
    return FaceDetector("yunet")


def test_registry_names_the_three_detectors_and_yunet_is_default() -> None:
    assert list_detectors() == ["cnn", "hog", "yunet"]
    assert DEFAULT_DETECTOR == "yunet"
    with pytest.raises(ConfigError, match="unknown detector 'haar'.*cnn, hog, yunet"):
        create_detector("haar")


def test_yunet_finds_the_astronaut_with_landmarks_inside_the_box(yunet) -> None:
    from skimage import data

    (found,) = yunet.detect(rgb(data.astronaut()))
    assert np.abs(np.subtract(found.box, ASTRONAUT_FACE)).max() <= 3
    assert found.confidence > 0.8
    left, top, right, bottom = found.box
    assert found.landmarks.shape == (5, 2)
    assert ((found.landmarks[:, 0] > left) & (found.landmarks[:, 0] < right)).all()
    assert ((found.landmarks[:, 1] > top) & (found.landmarks[:, 1] < bottom)).all()
    right_eye, left_eye, nose, right_mouth, left_mouth = found.landmarks
    # the subject's right eye is on the image's left; eyes above the nose above the mouth
    assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


@pytest.mark.parametrize("name", ["coffee", "rocket", "chelsea"])
def test_no_face_photos_give_nothing(yunet, name: str) -> None:
    from skimage import data

    assert yunet.detect(rgb(getattr(data, name)())) == []


def test_the_mission_patch_is_not_a_face(yunet) -> None:
    """HOG at upsample 1 fires on the round patch on her suit (score 0.12); YuNet must not,
    even with the patch enlarged to face size."""
    from skimage import data

    patch = rgb(data.astronaut())[300:460, 90:250]
    big = np.asarray(Image.fromarray(patch).resize((320, 320)))
    assert yunet.detect(patch) == [] and yunet.detect(big) == []
    assert Analyzer().analyze(big) == []


def test_big_images_are_detected_smaller_and_boxes_map_back(yunet) -> None:
    """The astronaut 4x enlarged (2048 px) is seen at 1280 px; box and landmarks come back
    in the big image's pixels."""
    from skimage import data

    small = rgb(data.astronaut())
    big = np.asarray(Image.fromarray(small).resize((2048, 2048), Image.BICUBIC))
    (at_small,) = yunet.detect(small)
    (at_big,) = yunet.detect(big)
    # seen at 1280 px the face is 2.5x bigger than at 512, so YuNet's boxes differ a little;
    # a box not mapped back would be off by hundreds of pixels
    width = at_big.box[2] - at_big.box[0]
    assert width > 300
    assert np.abs(np.subtract(at_big.box, np.multiply(at_small.box, 4))).max() <= 0.06 * width
    assert np.abs(at_big.landmarks - at_small.landmarks * 4).max() <= 0.06 * width


def test_tiny_images_give_nothing_rather_than_an_opencv_error(yunet) -> None:
    assert yunet.detect(np.zeros((8, 300, 3), np.uint8)) == []
    assert yunet.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_missing_model_file_is_a_weights_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "yunet.onnx"
    with pytest.raises(WeightsError, match=r"yunet\.onnx: YuNet model file is missing"):
        create_detector("yunet", model=missing)


def test_corrupt_model_file_is_a_weights_error_naming_it(tmp_path: Path) -> None:
    corrupt = tmp_path / "yunet.onnx"
    data = bytearray(default_model_path().read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    corrupt.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"yunet\.onnx: not the YuNet model"):
        create_detector("yunet", model=corrupt)
    truncated = tmp_path / "cut.onnx"
    shutil.copyfile(default_model_path(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"cut\.onnx"):
        create_detector("yunet", model=truncated)
    # with the check turned off, ONNX Runtime's own refusal is still one WeightsError naming the file
    with pytest.raises(WeightsError, match=r"cut\.onnx: ONNX Runtime cannot load it"):
        create_detector("yunet", model=truncated, sha256=None)


DEMO_FACES = {
    "nasa_sts106_crew_on_iss_2000.jpg": 7,
    "obama_family_2011.jpg": 4,
    "nasa_astronaut_group21_2013.png": 8,
    "solvay_conference_1927.jpg": 29,
}


@pytest.mark.skipif(not DEMO.is_dir(), reason="needs ../shared/demo")
@pytest.mark.parametrize("name,count", DEMO_FACES.items())
def test_yunet_finds_every_face_on_the_demo_photos(yunet, name: str, count: int) -> None:
    from face.images import load_image

    found = yunet.detect(load_image(DEMO / name))
    assert len(found) == count
    assert min(d.confidence for d in found) >= yunet.threshold


def test_answers_do_not_depend_on_the_order_of_image_sizes() -> None:
    from skimage import data

    from face.detectors.yunet import YuNetDetector

    astronaut = rgb(data.astronaut())
    wide = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))  # 1024x512, two faces
    detector = YuNetDetector()
    first = [detector.find(image) for image in (astronaut, wide, astronaut, wide)]
    assert [len(found) for found in first] == [1, 2, 1, 2]
    assert first[0][0].box == first[2][0].box and np.array_equal(first[0][0].landmarks, first[2][0].landmarks)
    fresh = YuNetDetector().find(wide)
    assert [d.box for d in fresh] == [d.box for d in first[1]]


def test_decoding_matches_opencvs_own_yunet() -> None:
    """OpenCV's cv2.FaceDetectorYN runs the same file with its own decoding: boxes, landmarks
    and scores must agree (on the demo photos too, where present)."""
    import cv2
    from skimage import data

    from face.detectors.yunet import SIZE_STEP, YuNetDetector
    from face.images import load_image

    images = [rgb(data.astronaut()), rgb(data.astronaut()[::2, :, :])]
    images += [load_image(DEMO / name) for name in DEMO_FACES if (DEMO / name).is_file()]
    ours = YuNetDetector()
    for image in images:
        image = image if max(image.shape) <= 1280 else cv2.resize(image, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
        padded = (-(-width // SIZE_STEP) * SIZE_STEP, -(-height // SIZE_STEP) * SIZE_STEP)
        bgr = np.zeros((padded[1], padded[0], 3), np.uint8)
        bgr[:height, :width] = image[:, :, ::-1]
        _, theirs = cv2.FaceDetectorYN.create(str(default_model_path()), "", padded, ours.threshold, 0.3, 5000).detect(bgr)
        found = ours.find(image)
        assert len(found) == len(theirs) > 0
        for detection, row in zip(sorted(found, key=lambda d: -d.confidence), theirs[np.argsort(-theirs[:, 14])]):
            x, y, w, h = row[:4]
            assert detection.box == (round(x), round(y), round(x + w), round(y + h))
            assert np.abs(detection.landmarks - row[4:14].reshape(5, 2)).max() < 1e-3
            assert abs(detection.confidence - row[14]) < 1e-4
