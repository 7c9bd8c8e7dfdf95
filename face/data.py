"""Labelled face datasets (UTKFace, FairFace), read by name from a registry, and split reproducibly.

UTKFace names look like ``[age]_[gender]_[race]_[yyyymmddHHMMSSFFF].jpg.chip.jpg`` (gender 0
male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others); its images are aligned
crops. FairFace's official layout is a CSV ``file,age,gender,race,service_test`` beside the
image folders, with 9 age bins and 7 races; its images are loose crops (margin 0.25) that
must be detected and aligned like any photo. The split keeps byte-identical files together
so a duplicate never sits on both sides.

Every face carries the same labels whatever its dataset: an exact age or -1, the age bin
(FairFace's 9), gender, UTKFace's 5-way race and FairFace's 7-way race or -1 where the
5-way label does not say (UTKFace's Asian and Others are sets of FairFace's classes).
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import DatasetError

GENDERS = ("male", "female")
RACES = ("White", "Black", "Asian", "Indian", "Others")
MAX_AGE = 100  # DEX's range: 0-100 covers all but a handful of UTKFace's centenarians

#: FairFace's seven races, in the order of the race head's outputs
FAIRFACE_RACES = ("White", "Black", "East Asian", "Southeast Asian", "Indian", "Latino_Hispanic", "Middle Eastern")
#: each of UTKFace's five races as the set of FairFace races it holds (its partial label)
RACE_SETS = ((0,), (1,), (2, 3), (4,), (5, 6))
#: FairFace race -> UTKFace race
RACE5_OF_RACE7 = tuple(next(r5 for r5, members in enumerate(RACE_SETS) if r7 in members) for r7 in range(len(FAIRFACE_RACES)))
#: FairFace's nine age bins, inclusive, on the 0-100 scale of the age head
AGE_BINS = ((0, 2), (3, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 59), (60, 69), (70, MAX_AGE))
AGE_BIN_NAMES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
#: FairFace's crops: the face box grown by this fraction of its side on every side
FAIRFACE_MARGIN = 0.25

DEFAULT_DATA_DIR = Path("train_data/UTKFace")

_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<stamp>\d+)\.?jpg(\.chip\.jpg)?$", re.IGNORECASE)


def age_bin_of(age: int) -> int:
    """FairFace's bin (0-8) of an exact age."""
    return next(i for i, (low, high) in enumerate(AGE_BINS) if age <= high) if age <= MAX_AGE else len(AGE_BINS) - 1


@dataclass(frozen=True)
class LabelledFace:
    """A face's labels: exact `age` or -1; `age_bin` and `race7` default to what age and race imply."""

    path: Path
    age: int
    gender: int
    race: int  # UTKFace's 5 classes
    age_bin: int = -1  # FairFace's 9 bins
    race7: int = -1  # FairFace's 7 classes; -1 when `race` is a set of them

    def __post_init__(self) -> None:
        if self.age_bin < 0 and self.age >= 0:
            object.__setattr__(self, "age_bin", age_bin_of(self.age))
        if self.race7 < 0 and len(RACE_SETS[self.race]) == 1:
            object.__setattr__(self, "race7", RACE_SETS[self.race][0])


@dataclass
class Dataset:
    """A folder's labelled faces, plus the names that could not be parsed.

    `kind` names its registry entry; `loose_crops` datasets need face detection before alignment.
    """

    root: Path
    faces: list[LabelledFace]
    skipped: list[str] = field(default_factory=list)
    kind: str = "utkface"

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def loose_crops(self) -> bool:
        return DATASETS[self.kind].loose_crops

    def labels(self) -> dict[str, np.ndarray]:
        return {name: np.array([getattr(f, name) for f in self.faces], np.int32) for name in ("age", "age_bin", "gender", "race", "race7")}

    def subset(self, indices) -> "Dataset":
        return Dataset(self.root, [self.faces[i] for i in indices], [], self.kind)


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


_FAIRFACE_COLUMNS = ("file", "age", "gender", "race")


def fairface_csv(root: Path) -> Path:
    """The label CSV of a FairFace-layout folder (or the CSV itself)."""
    if root.is_file():
        return root
    found = sorted(root.glob("fairface_label_*.csv")) or sorted(root.glob("*.csv"))
    if not found:
        raise DatasetError(f"{root}: no FairFace label CSV (fairface_label_train.csv or similar) in this folder")
    if len(found) > 1:
        raise DatasetError(f"{root}: several label CSVs ({', '.join(p.name for p in found)}); pass the one to use, e.g. --data fairface={found[0]}")
    return found[0]


def load_fairface(root: str | Path, limit: int | None = None) -> Dataset:
    """FairFace's official layout: a CSV `file,age,gender,race[,service_test]`, files relative to it.

    A malformed row (unknown bin, gender or race) or a missing image is a DatasetError naming
    the CSV line, not a silent skip: FairFace's labels are curated, so a bad row means a broken copy.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder; pass a folder holding FairFace's label CSV and images")
    table = fairface_csv(root)
    folder = table.parent
    genders = {"male": 0, "female": 1}
    faces = []
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _FAIRFACE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{table}: not a FairFace label CSV, missing column(s) {', '.join(missing)} (want {','.join(_FAIRFACE_COLUMNS)})")
        for line, row in enumerate(reader, start=2):
            if limit is not None and len(faces) >= limit:
                break
            age, gender, race = (row.get("age") or "").strip(), (row.get("gender") or "").strip().lower(), (row.get("race") or "").strip()
            if age not in AGE_BIN_NAMES:
                raise DatasetError(f"{table}:{line}: unknown age bin {age!r} (want one of {', '.join(AGE_BIN_NAMES)})")
            if gender not in genders:
                raise DatasetError(f"{table}:{line}: unknown gender {row.get('gender')!r} (want Male or Female)")
            if race not in FAIRFACE_RACES:
                raise DatasetError(f"{table}:{line}: unknown race {race!r} (want one of {', '.join(FAIRFACE_RACES)})")
            path = folder / (row.get("file") or "").strip()
            if not path.is_file():
                raise DatasetError(f"{table}:{line}: image {row.get('file')!r} not found at {path}")
            race7 = FAIRFACE_RACES.index(race)
            faces.append(LabelledFace(path, -1, genders[gender], RACE5_OF_RACE7[race7], AGE_BIN_NAMES.index(age), race7))
    if not faces:
        raise DatasetError(f"{table}: no labelled rows")
    return Dataset(folder, faces, [], "fairface")


# ---- the registry -----------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetKind:
    """How to read a dataset, and whether its images are aligned crops or need detection."""

    load: Callable[..., Dataset]
    loose_crops: bool
    #: for loose crops: the margin around the face, as a fraction of its side (fallback box)
    margin: float = 0.0
    #: every image goes to training, none to validation: more of a dataset another name
    #: already validates on (fairface-extra: FairFace images beyond those of `fairface`)
    train_only: bool = False


DATASETS: dict[str, DatasetKind] = {
    "utkface": DatasetKind(load_dataset, loose_crops=False),
    "fairface": DatasetKind(load_fairface, loose_crops=True, margin=FAIRFACE_MARGIN),
    "fairface-extra": DatasetKind(load_fairface, loose_crops=True, margin=FAIRFACE_MARGIN, train_only=True),
}


def guess_kind(root: str | Path) -> str:
    """"fairface" for a folder holding a FairFace label CSV (or the CSV), else "utkface"."""
    root = Path(root)
    if root.suffix.lower() == ".csv" or (root.is_dir() and any(root.glob("fairface_label_*.csv"))):
        return "fairface"
    return "utkface"


def parse_data_spec(spec: str | Path) -> tuple[str, Path]:
    """`NAME=DIR` or a bare `DIR` (its kind guessed: a FairFace CSV inside, else UTKFace)."""
    text = str(spec)
    name, sep, rest = text.partition("=")
    if sep and name in DATASETS:
        return name, Path(rest)
    if sep and "/" not in name and not Path(text).exists():
        raise DatasetError(f"--data {text}: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return guess_kind(text), Path(text)


def load_named(kind: str, root: str | Path, limit: int | None = None) -> Dataset:
    if kind not in DATASETS:
        raise DatasetError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[kind].load(root, limit=limit)


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
