"""A results file (`howold analyze --output`, a Ray run's, `howold video --output-json`) read
as one collection of faces: arrays a report can count, grouped by folder, with a tracked person
counted once and every line that cannot be used named."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import FAIRFACE_RACES, RACES
from .errors import HowoldError
from .quantification import decode_distributions
from .results import parse_result_line


class ReportError(HowoldError):
    """A results file cannot be reported on (empty, torn, not results, another model's)."""


@dataclass
class Faces:
    """The faces of a results file as arrays, one row per face (or per tracked person)."""

    sources: list[str]
    boxes: np.ndarray  # (N, 4)
    groups: list[str]
    gender: np.ndarray  # (N, 2) male, female
    race: np.ndarray  # (N, 5)
    race_fairface: np.ndarray | None  # (N, 7), None for 5-race heads
    age: np.ndarray  # (N,) reported ages
    age_distribution: np.ndarray  # (N, 101)
    images: int = 0
    failed: int = 0
    left_out: int = 0
    model: str | None = None
    tracked: int = 0  # persons tracked across a video's frames, each one face here
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, mask: np.ndarray) -> "Faces":
        pick = np.flatnonzero(mask)
        return Faces(
            [self.sources[i] for i in pick], self.boxes[pick], [self.groups[i] for i in pick], self.gender[pick], self.race[pick],
            None if self.race_fairface is None else self.race_fairface[pick], self.age[pick], self.age_distribution[pick],
        )


def _group_key(source: str, root: tuple[str, ...], by: str | None) -> str:
    """The folder a source is in, at depth `by` under `root` ("folder": depth 1)."""
    if by is None:
        return ""
    depth = 1 if by == "folder" else int(by)
    folders = source.replace("\\", "/").split("/")[:-1]
    if tuple(folders[: len(root)]) == root:
        folders = folders[len(root) :]
    return "/".join(folders[:depth]) or "."


def _common_root(sources: list[str]) -> tuple[str, ...]:
    """The folders every source is under: what was analysed."""
    common: list[str] | None = None
    for source in sources:
        folders = source.replace("\\", "/").split("/")[:-1]
        if common is None:
            common = folders
        else:
            while folders[: len(common)] != common:
                common = common[:-1]
    return tuple(common or ())


def read_results(path: str | Path, min_confidence: float | None = None, by: str | None = None) -> Faces:
    """The faces of a results file (read only: the file is never changed).

    One ReportError line for a file that is not a whole results file of one model: missing,
    empty, a torn line, a line that is not a result, faces without the fields a report needs
    (written before they existed), results of several models. Lines that say an image failed
    are counted in `failed`. Faces whose detection confidence is below `min_confidence` are
    counted in `left_out`. `by`: None, "folder" or a depth (as text) to group faces by.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ReportError(f"{path}: {error.strerror or error}") from None
    if not data.strip():
        raise ReportError(f"{path}: empty, no results in it; write one with `howold analyze FOLDER --output {path.name}`")
    lines = data.split(b"\n")
    if lines[-1].strip():
        raise ReportError(f"{path}:{len(lines)}: a torn last line (the analysis was stopped mid-write); run the same `howold analyze` again to finish it")
    entries, models = [], {}
    failed = 0
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            entry = parse_result_line(line)
        except ValueError:
            raise ReportError(f"{path}:{number}: not a howold result line") from None
        source = entry["source"]
        if "error" in entry or entry.get("retry") or "faces" not in entry:
            failed += 1
            continue
        if entry["faces"] and "model" not in entry:
            raise ReportError(f"{path}:{number}: written by an older howold (no model identity, no age distributions); analyse the images again into a new file")
        if "model" in entry:
            models.setdefault(entry["model"], number)
        entries.append((number, source, entry["faces"], entry.get("video")))
    if len(models) > 1:
        (first, a), (second, b) = list(models.items())[:2]
        raise ReportError(f"{path}: results of more than one model ({first} from line {a}, {second} from line {b}); report on each model's results separately")
    root = _common_root([source for _, source, _, _ in entries])
    rows: dict[str, list] = {k: [] for k in ("source", "box", "group", "gender", "race", "race7", "age", "dist", "person")}
    left_out = 0
    for number, source, faces, video in entries:
        for face in faces:
            try:
                confidence = face.get("detection_confidence")
                if min_confidence is not None and confidence is not None and confidence < min_confidence:
                    left_out += 1
                    continue
                female = face["gender_confidence"] if face["gender"] == "female" else 1 - face["gender_confidence"]
                rows["gender"].append((1 - female, female))
                rows["race"].append([face["race_confidences"][name] for name in RACES])
                rows["race7"].append([face["race_fairface_confidences"][name] for name in FAIRFACE_RACES] if "race_fairface_confidences" in face else None)
                rows["age"].append(float(face["age"]))
                rows["dist"].append(face["age_distribution"])
                rows["box"].append(face.get("box") or [0, 0, 0, 0])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ReportError(f"{path}:{number}: a face without the fields a report needs (gender, race, age and age_distribution); analyse the images again into a new file") from None
            rows["source"].append(source)
            rows["group"].append(_group_key(source, root, by))
            rows["person"].append((video, face["track"]) if video is not None and face.get("track") is not None else None)
    if not rows["source"]:
        raise ReportError(f"{path}: no faces to report on ({len(entries)} images analysed, {failed} failed, {left_out} faces below the confidence)")
    race7 = None if any(r is None for r in rows["race7"]) else np.asarray(rows["race7"], np.float64)
    try:
        distributions = decode_distributions(rows["dist"])
    except ValueError:
        raise ReportError(f"{path}: an age_distribution is not 101 numbers") from None
    faces = Faces(
        rows["source"], np.asarray(rows["box"], np.float64).reshape(-1, 4), rows["group"], np.asarray(rows["gender"], np.float64), np.asarray(rows["race"], np.float64),
        race7, np.asarray(rows["age"], np.float64), distributions, images=len(entries) + failed, failed=failed, left_out=left_out, model=next(iter(models), None),
    )
    return _one_per_person(faces, rows["person"])


def _one_per_person(faces: Faces, persons: list) -> Faces:
    """Faces of a video tracked across frames (`howold video --output-json`) become one face per
    tracked person: the mean of its frames' probabilities and distributions (its first frame
    for the crop). Other faces stay as they are."""
    if all(person is None for person in persons):
        return faces
    keys = [("face", i) if person is None else ("person", person) for i, person in enumerate(persons)]
    order: dict = {}
    first: list[int] = []
    for number, key in enumerate(keys):
        if key not in order:
            order[key] = len(order)
            first.append(number)
    index = np.array([order[key] for key in keys])

    def mean(values: np.ndarray) -> np.ndarray:
        sums = np.zeros((len(order), *values.shape[1:]))
        np.add.at(sums, index, values)
        return sums / np.bincount(index, minlength=len(order)).reshape(-1, *([1] * (values.ndim - 1)))

    merged = Faces(
        [faces.sources[i] for i in first], faces.boxes[first], [faces.groups[i] for i in first], mean(faces.gender), mean(faces.race),
        None if faces.race_fairface is None else mean(faces.race_fairface), mean(faces.age), mean(faces.age_distribution),
        images=faces.images, failed=faces.failed, left_out=faces.left_out, model=faces.model,
    )
    merged.tracked = sum(key[0] == "person" for key in order)
    return merged
