"""How honest `howold report`'s shares are: collections of faces with shifted mixes, drawn from
the validation parts (15%, seed 42) of UTKFace and FairFace, their true shares against the
naive counted ones and the corrected ones (each quantification method), with interval coverage.

    python benchmarks/bench_report_quantification.py [--collections 200] [--size 500] [--chip-sides 0,72,48]

Cross-fitted: each dataset's validation faces are split in two halves; the correction is fitted
(evaluation.quantification_stats) on one half and the collections are drawn from the other,
alternately, so no face is both in the statistics and in a collection. Collections:
- gender: UTKFace + FairFace faces, 10-90% women;
- age: UTKFace faces (exact ages), 5-50% under 20, the default bands (0-2, 3-9, ..., 70+);
- race: UTKFace + FairFace, one of the five races at 5-60%, the others as in the pool;
- race_fairface: FairFace, one of the seven races at 5-60%.
Chip side 0 is the full-size chip; 72 and 48 shrink every chip to that side and back (faces of
about 48 and 32 px, as group photos give) while the correction stays fitted on full-size faces,
as the shipped statistics are. Prints, per view, attribute and method: the mean absolute error in
points (mean over classes, and the worst class), and the share of class shares whose 90% interval
holds the truth. Needs ../shared/data; the first run extracts features (cached for later runs).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from face.data import FAIRFACE_RACES, GENDERS, RACES  # noqa: E402
from face.quantification import METHODS, ClassStats, band_of_year, band_stats, estimate_shares  # noqa: E402
from face.report import DEFAULT_AGE_BANDS, band_masses, combine_statistics  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DATASETS = {"utkface": DATA / "utkface", "fairface": DATA / "fairface"}


def validation_faces(chip_side: int | None) -> dict[str, dict[str, np.ndarray]]:
    """Per dataset, the validation faces' probabilities (flip-averaged, age read out as analyses
    read it) and labels."""
    from face.backbones import DEFAULT_BACKBONE, create_backbone
    from face.data import load_named, split_dataset
    from face.evaluation import DEFAULT_CROP_DETECTOR
    from face.features import AugmentConfig, extract_activations
    from face.model import load_heads, predict_views
    from face.model_files import default_heads_path
    from face.readout import AgeReadout, race5_probabilities

    network = create_backbone(DEFAULT_BACKBONE)
    trained = load_heads(default_heads_path(network))
    readout = AgeReadout.from_metadata(trained.metadata)
    faces = {}
    for kind, root in DATASETS.items():
        dataset = split_dataset(load_named(kind, root), 0.15, 42)[1]
        features = extract_activations(network, dataset, (trained.boundary,), AugmentConfig(views=2, resolution=chip_side), progress=False, detector=DEFAULT_CROP_DETECTOR)
        probabilities = predict_views(trained.model, features[trained.boundary])
        distributions = readout.apply(probabilities["age"].astype(np.float64))
        faces[kind] = {
            "probabilities": probabilities,
            "labels": dataset.labels(),
            "gender": probabilities["gender"].astype(np.float64),
            "race": race5_probabilities(probabilities["race"].astype(np.float64)),
            "race_fairface": probabilities["race"].astype(np.float64),
            "age_distribution": distributions,
            "age": np.round(readout.point_of(distributions), 1),
        }
    return faces


def fit(faces: dict, halves: dict, half: int) -> dict[str, ClassStats]:
    """The correction's statistics from one half of each dataset's validation faces, summed as `howold report` sums datasets."""
    from face.evaluation import quantification_stats

    parts = []
    for kind, part in faces.items():
        pick = halves[kind] == half
        probabilities = {k: v[pick] for k, v in part["probabilities"].items()}
        labels = {k: v[pick] for k, v in part["labels"].items()}
        # the distributions are read out already: the identity readout keeps them, its point is the analyses'
        parts.append(quantification_stats({**probabilities, "age": part["age_distribution"][pick]}, labels, _Identity(part["age"][pick])))
    return combine_statistics(parts)


class _Identity:
    """A readout that leaves read-out distributions as they are, with the analyses' point ages."""

    def __init__(self, points: np.ndarray):
        self.points = points

    def apply(self, distributions: np.ndarray) -> np.ndarray:
        return distributions

    def point_of(self, distributions: np.ndarray) -> np.ndarray:
        return self.points


def pool(faces: dict, halves: dict, half: int, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The faces of one half of the given datasets, as arrays the report uses."""
    parts = [{**{k: faces[kind][k] for k in ("gender", "race", "race_fairface", "age_distribution", "age")}, **{f"true_{k}": v for k, v in faces[kind]["labels"].items()}} for kind in kinds]
    picks = [halves[kind] == half for kind in kinds]
    return {key: np.concatenate([p[key][pick] for p, pick in zip(parts, picks)]) for key in parts[0]}


def draw(rng: np.random.Generator, classes: np.ndarray, wanted: dict[int, float], size: int) -> np.ndarray:
    """Indices of `size` faces whose classes have the `wanted` shares (without replacement where
    the pool holds enough, else with)."""
    chosen = []
    counts = rng.multinomial(size, np.array(list(wanted.values())))
    for (label, _), count in zip(wanted.items(), counts):
        members = np.flatnonzero(classes == label)
        chosen.append(rng.choice(members, count, replace=count > len(members)))
    return np.concatenate(chosen)


def scenario(rng: np.random.Generator, attribute: str, data: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(face indices, true shares) of one shifted collection."""
    if attribute == "gender":
        female = rng.uniform(0.1, 0.9)
        index = draw(rng, data["true_gender"], {0: 1 - female, 1: female}, size)
        return index, np.bincount(data["true_gender"][index], minlength=2) / size
    if attribute == "age":
        bands = band_of_year(DEFAULT_AGE_BANDS)[np.clip(data["true_age"], 0, 100)]
        young = rng.uniform(0.05, 0.5)
        index = draw(rng, (data["true_age"] < 20).astype(int), {1: young, 0: 1 - young}, size)
        return index, np.bincount(bands[index], minlength=len(DEFAULT_AGE_BANDS)) / size
    key, k = ("true_race", 5) if attribute == "race" else ("true_race7", 7)
    labels = data[key]
    known = labels >= 0
    natural = np.bincount(labels[known], minlength=k) / known.sum()
    chosen = int(rng.integers(k))
    share = rng.uniform(0.05, 0.6)
    others = np.delete(natural, chosen)
    wanted = {c: share if c == chosen else (1 - share) * natural[c] / others.sum() for c in range(k)}
    index = draw(rng, labels, wanted, size)
    return index, np.bincount(labels[index], minlength=k) / size


def inputs(attribute: str, data: dict, index: np.ndarray, stats: dict[str, ClassStats]) -> tuple[ClassStats, np.ndarray, np.ndarray]:
    if attribute == "age":
        years = np.clip(np.floor(data["age"][index]).astype(int), 0, 100)
        return band_stats(stats["age_years"], DEFAULT_AGE_BANDS), band_of_year(DEFAULT_AGE_BANDS)[years], band_masses(data["age_distribution"][index], DEFAULT_AGE_BANDS)
    probabilities = data[attribute][index]
    return stats[attribute], probabilities.argmax(axis=1), probabilities


POOLS = {"gender": ("utkface", "fairface"), "age": ("utkface",), "race": ("utkface", "fairface"), "race_fairface": ("fairface",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", type=int, default=200, help="collections per attribute and view")
    parser.add_argument("--size", type=int, default=500, help="faces per collection")
    parser.add_argument("--chip-sides", default="0,72,48", help="0: full-size chips")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--draws", type=int, default=200, help="bootstrap draws per interval")
    args = parser.parse_args()
    if not all(path.is_dir() for path in DATASETS.values()):
        sys.exit(f"needs {', '.join(str(p) for p in DATASETS.values())}")
    methods = args.methods.split(",")
    started = time.perf_counter()
    full = validation_faces(None)
    rng = np.random.default_rng(0)
    halves = {kind: rng.permutation(len(part["gender"])) % 2 for kind, part in full.items()}
    fitted = [fit(full, halves, half) for half in (0, 1)]
    sizes = ", ".join(f"{kind} {len(part['gender'])}" for kind, part in full.items())
    print(f"validation faces: {sizes}; fitted in {time.perf_counter() - started:.0f} s")
    print(f"{args.collections} collections of {args.size} faces per attribute and view; MAE in points (mean over classes / worst class); coverage of the 90% intervals")
    print(f"{'view':>6} {'attribute':<14} {'method':<6} {'MAE':>6} {'worst':>6} {'cover':>6}  worst class")
    for side in (int(s) for s in args.chip_sides.split(",")):
        faces = full if side == 0 else validation_faces(side)
        for attribute, kinds in POOLS.items():
            errors = {m: [] for m in methods}
            covered = {m: [] for m in methods}
            for number in range(args.collections):
                half = number % 2  # collections from one half, statistics from the other
                data = pool(faces, halves, half, kinds)
                index, truth = scenario(rng, attribute, data, args.size)
                stats, labels, probabilities = inputs(attribute, data, index, fitted[1 - half])
                for method in methods:
                    result = estimate_shares(method, stats, labels, probabilities, draws=args.draws, seed=number)
                    errors[method].append(np.abs(result.share - truth) * 100)
                    covered[method].append((result.low - 1e-9 <= truth) & (truth <= result.high + 1e-9))
            classes = {"gender": GENDERS, "age": stats.classes, "race": RACES, "race_fairface": FAIRFACE_RACES}[attribute]
            for method in methods:
                per_class = np.mean(errors[method], axis=0)
                cover = np.mean(covered[method])
                worst = int(per_class.argmax())
                print(f"{side or 'full':>6} {attribute:<14} {method:<6} {per_class.mean():6.2f} {per_class[worst]:6.2f} {cover:6.1%}  {classes[worst]}" + ("" if attribute != "age" else "  per band: " + " ".join(f"{v:.1f}" for v in per_class)))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
