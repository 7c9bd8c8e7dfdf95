"""UTKFace-style labelled folders: parse file names, skip malformed ones, split reproducibly.

Names look like ``[age]_[gender]_[race]_[yyyymmddHHMMSSFFF].jpg.chip.jpg`` (gender 0 male,
1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others). The split keeps
byte-identical files together so a duplicate never sits on both sides.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DatasetError

GENDERS = ("male", "female")
RACES = ("White", "Black", "Asian", "Indian", "Others")
MAX_AGE = 100  # DEX's range: 0-100 covers all but a handful of UTKFace's centenarians

DEFAULT_DATA_DIR = Path("train_data/UTKFace")

_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<stamp>\d+)\.?jpg(\.chip\.jpg)?$", re.IGNORECASE)


@dataclass(frozen=True)
class LabelledFace:
    path: Path
    age: int
    gender: int
    race: int


@dataclass
class Dataset:
    """A folder's labelled faces, plus the names that could not be parsed."""

    root: Path
    faces: list[LabelledFace]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.faces)

    def labels(self) -> dict[str, np.ndarray]:
        return {
            "age": np.array([f.age for f in self.faces], np.int32),
            "gender": np.array([f.gender for f in self.faces], np.int32),
            "race": np.array([f.race for f in self.faces], np.int32),
        }

    def subset(self, indices) -> "Dataset":
        return Dataset(self.root, [self.faces[i] for i in indices], [])


def parse_name(name: str) -> LabelledFace | None:
    """Labels from a UTKFace file name, or None when the name does not carry all three."""
    match = _NAME.match(name)
    if not match:
        return None
    age = int(match["age"])
    if age > 120:
        return None
    return LabelledFace(Path(name), age, int(match["gender"]), int(match["race"]))


def load_dataset(root: str | Path = DEFAULT_DATA_DIR, limit: int | None = None) -> Dataset:
    """Every parseable image of `root`, sorted by name; malformed names are listed in `skipped`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; put UTKFace images there or pass --data")
    faces, skipped = [], []
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        parsed = parse_name(path.name)
        if parsed is None:
            skipped.append(path.name)
        else:
            faces.append(LabelledFace(path, parsed.age, parsed.gender, parsed.race))
    if not faces:
        raise DatasetError(f"{root}: no image named like UTKFace ([age]_[gender]_[race]_[date].jpg.chip.jpg)")
    if limit is not None:
        faces = faces[:limit]
    return Dataset(root, faces, skipped)


def content_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def split_dataset(dataset: Dataset, validation_fraction: float = 0.15, seed: int = 42) -> tuple[Dataset, Dataset]:
    """Train/validation split by groups of byte-identical files, reproducible for a seed."""
    groups: dict[str, list[int]] = {}
    for index, face in enumerate(dataset.faces):
        groups.setdefault(content_hash(face.path), []).append(index)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    target = int(round(validation_fraction * len(dataset)))
    validation: list[int] = []
    train: list[int] = []
    for position in order:
        members = groups[keys[position]]
        (validation if len(validation) < target else train).extend(members)
    return dataset.subset(sorted(train)), dataset.subset(sorted(validation))
