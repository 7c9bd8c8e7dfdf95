"""`howold report`: what is in a whole collection, from the results file of `howold analyze --output`.

Shares of gender, race (5 and 7) and age bands, each corrected for the model's errors
(face.quantification, with the statistics the model's sidecar carries) with a 90% interval and
the naive counted share beside it; as a JSON summary and a self-contained HTML page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from .data import FAIRFACE_RACES, GENDERS, RACES
from .errors import HowoldError
from .quantification import (
    DEFAULT_METHOD,
    YEARS,
    ClassStats,
    Estimate,
    band_names,
    band_of_year,
    band_stats,
    decode_distributions,
    estimate_shares,
)

DEFAULT_AGE_BANDS = (0, 3, 10, 20, 30, 40, 50, 60, 70)
#: the attributes a report holds, with the classes of each (age: the bands)
ATTRIBUTES = ("gender", "age", "race", "race_fairface")
#: the model card's caveats, in two sentences, for the page
CAVEATS = (
    "The shares are what the model reads from faces: apparent age, the datasets' binary gender label and perceived race, "
    "not how people describe themselves. The correction assumes the model errs on this collection as it did on its "
    "validation faces (UTKFace and FairFace); on very different photos (tiny, blurred or profile faces) it may not, and the "
    "intervals do not cover that."
)


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
    tracked: int = 0  # faces of videos counted as tracked persons: their frames
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, mask: np.ndarray) -> "Faces":
        pick = np.flatnonzero(mask)
        return Faces(
            [self.sources[i] for i in pick], self.boxes[pick], [self.groups[i] for i in pick], self.gender[pick], self.race[pick],
            None if self.race_fairface is None else self.race_fairface[pick], self.age[pick], self.age_distribution[pick],
        )


def _group_key(source: str, root: PurePath, by: str | None) -> str:
    """The folder a source is in, at depth `by` under `root` ("folder": depth 1)."""
    if by is None:
        return ""
    depth = 1 if by == "folder" else int(by)
    parts = PurePath(source).relative_to(root).parts[:-1] if PurePath(source).is_relative_to(root) else PurePath(source).parts[:-1]
    return "/".join(parts[:depth]) or "."


def _common_root(sources: list[str]) -> PurePath:
    """The folder every source is under: what was analysed."""
    parents = [PurePath(s).parent.parts for s in sources]
    common: list[str] = []
    for parts in zip(*parents):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return PurePath(*common) if common else PurePath("")


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
            entry = json.loads(line)
            source = entry["source"]
        except (ValueError, KeyError, TypeError):
            raise ReportError(f"{path}:{number}: not a howold result line") from None
        if "error" in entry or entry.get("retry") or "faces" not in entry:
            failed += 1
            continue
        if entry["faces"] and "model" not in entry:
            raise ReportError(f"{path}:{number}: written by an older howold (no model identity, no age distributions); analyse the images again into a new file")
        if "model" in entry:
            models.setdefault(entry["model"], number)
        entries.append((number, source, entry["faces"]))
    if len(models) > 1:
        (first, a), (second, b) = list(models.items())[:2]
        raise ReportError(f"{path}: results of more than one model ({first} from line {a}, {second} from line {b}); report on each model's results separately")
    root = _common_root([source for _, source, _ in entries]) if entries else PurePath("")
    rows: dict[str, list] = {k: [] for k in ("source", "box", "group", "gender", "race", "race7", "age", "dist")}
    left_out = 0
    for number, source, faces in entries:
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
    if not rows["source"]:
        raise ReportError(f"{path}: no faces to report on ({len(entries)} images analysed, {failed} failed, {left_out} faces below the confidence)")
    race7 = None if any(r is None for r in rows["race7"]) else np.asarray(rows["race7"], np.float64)
    try:
        distributions = decode_distributions(rows["dist"])
    except ValueError:
        raise ReportError(f"{path}: an age_distribution is not 101 numbers") from None
    return Faces(
        rows["source"], np.asarray(rows["box"], np.float64).reshape(-1, 4), rows["group"], np.asarray(rows["gender"], np.float64), np.asarray(rows["race"], np.float64),
        race7, np.asarray(rows["age"], np.float64), distributions, images=len(entries), failed=failed, left_out=left_out, model=next(iter(models), None),
    )


# ---- the model's statistics ------------------------------------------------------------------


def model_statistics(metadata: dict, model: str | None) -> dict[str, ClassStats]:
    """The sidecar's quantification statistics, summed over the datasets they were measured on:
    {"gender", "race", "race_fairface", "age_years"}. A ReportError when the sidecar has none or
    they are of other weights than `model`'s (the results')."""
    entry = metadata.get("quantification")
    if not entry or not entry.get("datasets"):
        raise ReportError("this model's sidecar has no quantification statistics; add them with `howold evaluate --data NAME=DIR --split validation --store-stats`")
    if model is not None and entry.get("model") != model:
        raise ReportError(f"the results are of model {model}, but the statistics are of model {entry.get('model')}; give --heads the model that made the results")
    combined: dict[str, ClassStats] = {}
    for stats in entry["datasets"].values():
        for name in ("gender", "race", "race_fairface", "age_years"):
            if name in stats:
                part = ClassStats.from_dict(stats[name])
                if name in combined:
                    part = ClassStats(part.classes, combined[name].counted + part.counted, combined[name].mass + part.mass)
                combined[name] = part
    return combined


# ---- the summary -------------------------------------------------------------------------------


def band_masses(distributions: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    """(N, bands) probability of each age band."""
    return distributions @ np.eye(len(edges))[band_of_year(edges)]


def _attribute_inputs(faces: Faces, stats: dict[str, ClassStats], edges: tuple[int, ...]) -> dict[str, tuple[ClassStats, np.ndarray, np.ndarray]]:
    """Per attribute: its statistics, each face's label and probabilities."""
    inputs = {"gender": (stats["gender"], faces.gender.argmax(axis=1), faces.gender)}
    if "age_years" in stats:
        years = np.clip(np.floor(faces.age).astype(int), 0, YEARS - 1)
        inputs["age"] = (band_stats(stats["age_years"], edges), band_of_year(edges)[years], band_masses(faces.age_distribution, edges))
    inputs["race"] = (stats["race"], faces.race.argmax(axis=1), faces.race)
    if faces.race_fairface is not None and "race_fairface" in stats:
        inputs["race_fairface"] = (stats["race_fairface"], faces.race_fairface.argmax(axis=1), faces.race_fairface)
    return inputs


def shares(faces: Faces, stats: dict[str, ClassStats], edges: tuple[int, ...], method: str = DEFAULT_METHOD, draws: int = 300) -> dict:
    """{attribute: {class: {share, low, high, counted}}} of these faces."""
    result = {}
    for name, (attribute_stats, labels, probabilities) in _attribute_inputs(faces, stats, edges).items():
        estimate: Estimate = estimate_shares(method, attribute_stats, labels, probabilities, draws=draws)
        result[name] = estimate.to_dict(attribute_stats.classes)
    return result


def summarise(faces: Faces, stats: dict[str, ClassStats], edges: tuple[int, ...] = DEFAULT_AGE_BANDS, method: str = DEFAULT_METHOD, draws: int = 300) -> dict:
    """The JSON summary: counts, method, model, the shares of all faces, and of each group."""
    summary = {
        "images": faces.images,
        "faces": len(faces),
        "faces_left_out": faces.left_out,
        "images_failed": faces.failed,
        "method": method,
        "model": faces.model,
        "age_readout": "age bands: corrected from each face's age distribution; counted from its reported age (whole years)",
        "age_bands": list(band_names(edges)),
    }
    if faces.tracked:
        summary["tracked"] = faces.tracked
    summary.update(shares(faces, stats, edges, method, draws))
    names = sorted(set(faces.groups))
    if names != [""]:
        groups = np.asarray(faces.groups)
        summary["groups"] = {}
        for name in names:
            part = faces.subset(groups == name)
            summary["groups"][name] = {"faces": len(part), **shares(part, stats, edges, method, draws)}
    return summary


def age_histogram(faces: Faces) -> dict:
    """Per year 0..100: the faces' summed age distributions, and the faces whose reported age is in it."""
    counted = np.bincount(np.clip(np.floor(faces.age).astype(int), 0, YEARS - 1), minlength=YEARS)
    return {"summed": faces.age_distribution.sum(axis=0), "counted": counted}
