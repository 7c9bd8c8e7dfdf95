"""Shared fixtures: paths to the real data when present, and small datasets the tests make."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
UTKFACE = SHARED / "data" / "utkface"
DEMO = SHARED / "demo"


@pytest.fixture(autouse=True)
def isolated_howold_home(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder, so no test sees another's features or downloads."""
    monkeypatch.setenv("HOWOLD_HOME", str(tmp_path_factory.mktemp("howold_home")))


def astronaut_face() -> np.ndarray:
    """A 200x200 face crop from scikit-image's bundled astronaut photo (no download)."""
    from PIL import Image
    from skimage import data

    face = data.astronaut()[20:230, 150:330]
    return np.asarray(Image.fromarray(face).resize((200, 200)))


def make_utkface_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` face crops named like UTKFace, with varied pixels and labels, plus a malformed name."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = astronaut_face().astype(np.int16)
    for index in range(count):
        age, gender, race = int(rng.integers(1, 90)), int(rng.integers(0, 2)), int(rng.integers(0, 5))
        tint = rng.integers(-40, 40, size=3)
        image = np.clip(base + tint + rng.integers(-10, 10, size=base.shape), 0, 255).astype(np.uint8)
        if index % 2:
            image = image[:, ::-1]
        Image.fromarray(image).save(folder / f"{age}_{gender}_{race}_2017011{index:010d}.jpg.chip.jpg")
    Image.fromarray(base.astype(np.uint8)).save(folder / "39_1_20170116174525125.jpg.chip.jpg")  # race missing
    return folder


@pytest.fixture
def tiny_utkface(tmp_path) -> Path:
    return make_utkface_folder(tmp_path / "utk", 24)


FAIRFACE_HEADER = "file,age,gender,race,service_test\n"


def make_fairface_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` 224x224 loose crops (the astronaut's face with FairFace's 0.25 margin) in FairFace's
    official layout: train/<n>.jpg and fairface_label_train.csv."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    (folder / "train").mkdir(parents=True, exist_ok=True)
    crop = np.asarray(Image.fromarray(data.astronaut()[0:300, 90:390]).resize((224, 224)), np.int16)
    bins = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
    races = ("White", "Black", "East Asian", "Southeast Asian", "Indian", "Latino_Hispanic", "Middle Eastern")
    rows = []
    for index in range(1, count + 1):
        image = np.clip(crop + rng.integers(-30, 30, size=3) + rng.integers(-8, 8, size=crop.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image[:, ::-1] if index % 2 else image).save(folder / "train" / f"{index}.jpg")
        rows.append(f"train/{index}.jpg,{bins[index % 9]},{('Male', 'Female')[index % 2]},{races[index % 7]},{index % 3 == 0}\n")
    (folder / "fairface_label_train.csv").write_text(FAIRFACE_HEADER + "".join(rows))
    return folder


@pytest.fixture
def tiny_fairface(tmp_path) -> Path:
    return make_fairface_folder(tmp_path / "fairface", 16)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """About 50 made-up photos plus broken and awkward files (tests/photo_folder.py)."""
    from photo_folder import make_photo_folder

    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def photo_results(photos) -> list[dict]:
    """Their results from today's analyze_many (HOG, no upsampling): every image in one batch."""
    from face import Analyzer

    return Analyzer(detector="hog", upsample=0).analyze_many([str(p) for p in photos], batch_size=len(photos))
