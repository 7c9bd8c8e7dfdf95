"""End to end on real group photos (../shared/demo), and on a synthetic video.

The photos are not part of the product: these tests skip when ../shared/demo is absent.
Its SOURCES.md lists each file with its number of faces.

dlib's CNN (mmod) detector is slow on CPU (about 10-14 us per pixel scanned, times 4 per
upsampling step) and finds faces whose box is about 80 px or more in the image it scans.
The settings below are the cheapest found, on 2 cores, that find every face:

=================================  ============  ========  ==================  ======
photo                              face boxes    upsample  max_detect_side     time
=================================  ============  ========  ==================  ======
nasa_sts106_crew_on_iss_2000.jpg   ~230-420 px   0         1000 (scale 0.34)   ~9 s
obama_family_2011.jpg              ~80 px        0         1600 (full size)    ~5 s
nasa_astronaut_group21_2013.png    ~25-35 px     2         1600 (full size)    ~22 s
solvay_conference_1927.jpg         ~80-115 px    0         3000 (full size)    ~89 s
=================================  ============  ========  ==================  ======

STS-106 at 800 px found all 7 too, but one at a confidence of only 0.04. Group 21 at
upsample=1 found 1 of 8. Solvay at full size is as slow as at 1600 with upsample=1 (92 s,
also all 29) and nothing cheaper finds 25: at 2000 px it finds 9, at 1600 px 1.

The suite runs the CNN on the first two only (CNN_PHOTOS: a shrunk photo and a full-size one,
~15 s together): Group 21 and Solvay cost over a minute each and would test dlib's model
rather than howold. Their faces are counted with YuNet (test_detectors.py) and HOG, and their
adults' ages checked, through the web app (test_web.py); benchmarks/bench_analyze.py runs the
CNN on all four.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from face import Analyzer

DEMO = Path(__file__).resolve().parents[1].parent / "shared" / "demo"
WEIGHTS_SIDECAR = Path(__file__).resolve().parents[1] / "weights" / "dlib-resnet.json"

# photo -> (upsample, max_detect_side, fewest faces to find, most faces to find)
PHOTOS = {
    "nasa_sts106_crew_on_iss_2000.jpg": (0, 1000, 7, 7),
    "obama_family_2011.jpg": (0, 1600, 4, 4),
    "nasa_astronaut_group21_2013.png": (2, 1600, 6, 8),
    "solvay_conference_1927.jpg": (0, 3000, 25, 29),
}
CNN_PHOTOS = ["nasa_sts106_crew_on_iss_2000.jpg", "obama_family_2011.jpg"]
ADULT_PHOTOS = ["nasa_sts106_crew_on_iss_2000.jpg"]


def demo_dir() -> Path:
    if not DEMO.is_dir():
        pytest.skip(f"{DEMO} is absent: the demo photos are not part of the repository")
    return DEMO


def listed_faces() -> dict[str, int]:
    """file -> number of faces, from the table in SOURCES.md."""
    text = (demo_dir() / "SOURCES.md").read_text(encoding="utf-8")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\|\s*([\w.-]+\.(?:jpg|jpeg|png))\s*\|\s*(\d+)\s*\|", text, re.M)}


@lru_cache(maxsize=None)
def analysed(name: str) -> tuple[list[dict], tuple[int, int]]:
    """Faces found with the CNN detector at the settings in PHOTOS (computed once)."""
    path = demo_dir() / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    upsample, max_side, _, _ = PHOTOS[name]
    analyzer = Analyzer(detector="cnn", upsample=upsample, max_detect_side=max_side)
    from face.images import load_image

    image = load_image(path)
    return analyzer.analyze(image), image.shape[:2]


def iou(a, b) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_sources_lists_the_photos():
    listed = listed_faces()
    for name, (_, _, _, most) in PHOTOS.items():
        assert listed.get(name) == most, f"SOURCES.md says {listed.get(name)} faces for {name}"


@pytest.mark.slow
@pytest.mark.parametrize("name", CNN_PHOTOS)
def test_cnn_finds_the_faces(name):
    faces, (height, width) = analysed(name)
    _, _, fewest, most = PHOTOS[name]
    assert fewest <= len(faces) <= most, f"{name}: {len(faces)} faces, want {fewest}..{most}"
    assert all(face["detection_confidence"] is not None and face["detection_confidence"] > 0 for face in faces)
    for i, a in enumerate(faces):  # distinct faces, no double detections
        for b in faces[i + 1 :]:
            assert iou(a["box"], b["box"]) < 0.3
    for face in faces:
        left, top, right, bottom = face["box"]
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
    json.dumps(faces)


def validation_age_mae() -> float | None:
    try:
        return float(json.loads(WEIGHTS_SIDECAR.read_text())["validation"]["age_mae"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


_MAE = validation_age_mae()


@pytest.mark.slow
@pytest.mark.skipif(
    _MAE is None or _MAE >= 8,
    reason=f"shipped heads are placeholders (validation age_mae {_MAE} in {WEIGHTS_SIDECAR.name}); plausibility needs age_mae < 8",
)
@pytest.mark.parametrize("name", ADULT_PHOTOS)
def test_adults_predicted_as_adults(name):
    faces, _ = analysed(name)
    ages = [face["age"] for face in faces]
    assert ages and min(ages) >= 16, f"{name}: ages {ages}"
    assert float(np.median(ages)) >= 25, f"{name}: ages {ages}"


# ---- video ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hog_analyzer() -> Analyzer:
    # upsample=0: at 1 HOG also fires weakly on the astronaut's mission patch.
    return Analyzer(detector="hog", upsample=0)


def write_translating_video(path: Path, frames: int = 20, size: tuple[int, int] = (320, 256)) -> int:
    """The astronaut's face in a window drifting 2 px right and 1 px down per frame."""
    import cv2
    from skimage import data

    image = data.astronaut()
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        x, y = 60 + 2 * i, i
        writer.write(np.ascontiguousarray(image[y : y + height, x : x + width, ::-1]))
    writer.release()
    return frames


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    count, shape = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, shape = count + 1, frame.shape[:2]
    capture.release()
    return count, shape


def test_video_one_face_one_track(hog_analyzer, tmp_path):
    from face.video import analyze_video

    source, output = tmp_path / "drift.mp4", tmp_path / "out" / "drift_howold.mp4"
    frames = write_translating_video(source)
    summary = analyze_video(hog_analyzer, str(source), output=output, every=1, progress=False)
    assert summary["frames"] == frames
    assert summary["tracks"] == 1, summary
    assert summary["faces_per_frame_mean"] == pytest.approx(1.0, abs=0.1)
    assert summary["fps"] > 0 and summary["output"] == str(output)
    json.dumps(summary)
    count, shape = count_frames(output)
    assert count == frames and shape == (256, 320)


def test_video_detects_every_nth_frame(hog_analyzer, tmp_path):
    from face.video import analyze_video

    source = tmp_path / "drift.mp4"
    frames = write_translating_video(source)
    summary = analyze_video(hog_analyzer, source, output=None, every=3, progress=False)
    assert summary["frames"] == frames and summary["analysed_frames"] == 7  # frames 0, 3, ..., 18
    assert summary["tracks"] == 1 and summary["output"] is None


def test_tracker_smooths_labels():
    from face.video import Tracker

    def face(box, age, gender_confidence, gender="female"):
        races = {"White": 0.6, "Black": 0.1, "Asian": 0.1, "Indian": 0.1, "Others": 0.1}
        return {"box": box, "age": age, "gender": gender, "gender_confidence": gender_confidence, "race": "White", "race_confidences": races}

    tracker = Tracker(smoothing=0.3)
    tracker.update([face([0, 0, 100, 100], 30, 0.9), face([300, 300, 380, 380], 50, 0.8, "male")])
    for _ in range(3):
        tracker.update([face([5, 3, 105, 103], 30, 0.9), face([302, 301, 382, 381], 50, 0.8, "male")])
    # One noisy frame: the label does not flip, the age barely moves.
    tracker.update([face([8, 5, 108, 105], 60, 0.6, "male"), face([303, 302, 383, 382], 50, 0.8, "male")])
    first, second = (track.face() for track in tracker.visible())
    assert tracker.created == 2
    assert first["gender"] == "female" and 30 < first["age"] < 40
    assert second["gender"] == "male" and second["age"] == pytest.approx(50)
    # A face missed once is still drawn (one round of grace), missed twice it is not.
    tracker.update([face([300, 300, 380, 380], 50, 0.8, "male")])
    assert len(tracker.visible()) == 2
    tracker.update([face([300, 300, 380, 380], 50, 0.8, "male")])
    assert [track.id for track in tracker.visible()] == [2]
    # A face that disappears is dropped after max_missed rounds; a new one starts a track.
    for _ in range(tracker.max_missed + 1):
        tracker.update([face([300, 300, 380, 380], 50, 0.8, "male")])
    assert len(tracker.tracks) == 1
    tracker.update([face([300, 300, 380, 380], 50, 0.8, "male"), face([600, 0, 700, 100], 20, 0.7)])
    assert tracker.created == 3
