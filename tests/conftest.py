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
