"""Chips from YuNet's five landmarks vs. dlib's 5-point alignment, on UTKFace.

    python benchmarks/bench_alignment.py --fit          # fit face.alignment.YUNET_TEMPLATE (training split)
    python benchmarks/bench_alignment.py [--limit N]    # compare on the validation split

The comparison cuts each validation image's chip three ways:
  dlib-crop        dlib's landmarks inside the whole crop: how the shipped model's training chips were cut
  yunet+dlib       dlib's landmarks inside YuNet's box: the Analyzer with --detector yunet, dlib alignment
  yunet-landmarks  YuNet's own landmarks warped onto the template: no shape predictor
and prints the descriptor distance (dlib's 128-d descriptor; 0.6 is its same-person
threshold) between them, the validation metrics of the shipped model with each (flip TTA),
and the time per face of each alignment. Needs ../shared/data/utkface.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

UTKFACE = ROOT.parent / "shared/data/utkface"


def largest(detections):
    return max(detections, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])) if detections else None


def dlib_chip_to_image(shape, spec) -> np.ndarray:
    """2x3 affine from a dlib chip's pixels to the image's (from dlib's chip details)."""
    import dlib

    details = dlib.get_face_chip_details(shape, spec.size, spec.padding)
    rect = details.rect
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    scale = np.diag([(rect.right() - rect.left()) / (details.cols - 1), (rect.bottom() - rect.top()) / (details.rows - 1)])
    cos, sin = np.cos(details.angle), np.sin(details.angle)
    linear = np.array([[cos, -sin], [sin, cos]]) @ scale
    offset = centre - linear @ np.array([(details.cols - 1) / 2, (details.rows - 1) / 2])
    return np.hstack([linear, offset[:, None]])


def fit(dataset, detector, aligner, spec) -> np.ndarray:
    import cv2

    from face.alignment import crop_box
    from face.images import load_image

    points = []
    for face in dataset.faces:
        image = load_image(face.path)
        found = largest(detector.detect(image))
        if found is None:
            continue
        to_image = dlib_chip_to_image(aligner.landmarks(image, crop_box(image)), spec)
        to_chip = cv2.invertAffineTransform(to_image)
        chip_points = found.landmarks @ to_chip[:, :2].T + to_chip[:, 2]
        points.append(chip_points / (spec.size - 1) * (1 + 2 * spec.padding) - spec.padding)
    points = np.array(points)
    print(f"fitted on {len(points)} faces; spread (std) per point: {np.round(points.std(axis=0).mean(axis=1), 4).tolist()}")
    return points.mean(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--weights", default=None, help="extra landmark weightings to compare, e.g. '2,2,1,0,0;2,2,1,0.5,0.5'")
    parser.add_argument("--limit", type=int, default=None, help="images of the split to use (default: all; 2,000 for --fit)")
    args = parser.parse_args()
    if not UTKFACE.is_dir():
        sys.exit(f"{UTKFACE} is absent")

    from face.alignment import Aligner, crop_box, warp_chip
    from face.analyzer import Analyzer
    from face.data import load_dataset, split_dataset
    from face.detection import FaceDetector
    from face.evaluation import compute_metrics
    from face.images import load_image

    train_set, validation_set = split_dataset(load_dataset(UTKFACE))
    detector, aligner = FaceDetector("yunet"), Aligner()
    analyzer = Analyzer(tta=("flip",))
    spec = analyzer.backbone.chip
    if args.fit:
        subset = train_set.subset(range(0, len(train_set), max(1, len(train_set) // (args.limit or 2000))))
        template = fit(subset, detector, aligner, spec)
        print("YUNET_TEMPLATE =", np.round(template, 4).tolist())
        return

    dataset = validation_set if args.limit is None else validation_set.subset(range(min(args.limit, len(validation_set))))
    chips = {"dlib-crop": [], "yunet+dlib": [], "yunet-landmarks": []}
    weightings = [np.array([float(v) for v in w.split(",")]) for w in args.weights.split(";")] if args.weights else []
    for weights in weightings:
        chips["yunet w=" + ",".join(f"{v:g}" for v in weights)] = []
    seconds = {"dlib": 0.0, "warp": 0.0}
    missed = 0
    for face in dataset.faces:
        image = load_image(face.path)
        found = largest(detector.detect(image))
        chips["dlib-crop"].append(aligner.chips(image, [crop_box(image)], spec)[0])
        if found is None:
            missed += 1
            for name in list(chips)[1:]:
                chips[name].append(chips["dlib-crop"][-1])
            continue
        started = time.perf_counter()
        chips["yunet+dlib"].append(aligner.chips(image, [found.box], spec)[0])
        seconds["dlib"] += time.perf_counter() - started
        started = time.perf_counter()
        chips["yunet-landmarks"].append(aligner.chips(image, [found.box], spec, [found.landmarks])[0])
        seconds["warp"] += time.perf_counter() - started
        for weights in weightings:
            chips["yunet w=" + ",".join(f"{v:g}" for v in weights)].append(warp_chip(image, found.landmarks, spec, weights))
    detected = len(dataset) - missed
    print(f"{len(dataset)} validation images, YuNet found a face in {detected} (the {missed} others use dlib-crop chips in every column)")
    print(f"alignment per face: dlib shape predictor + chip {seconds['dlib'] / detected * 1000:.2f} ms, YuNet landmarks warp {seconds['warp'] / detected * 1000:.2f} ms")

    descriptors, metrics = {}, {}
    labels = dataset.labels()
    for name, batch in chips.items():
        batch = np.stack(batch)
        descriptors[name] = analyzer.backbone.embed(batch)
        probabilities = analyzer.predict_probabilities(batch)
        metrics[name] = compute_metrics(probabilities, labels)
    pairs = [("dlib-crop", "yunet+dlib")] + [(a, b) for b in list(chips)[2:] for a in ("dlib-crop", "yunet+dlib")]
    for a, b in pairs:
        distance = np.linalg.norm(descriptors[a] - descriptors[b], axis=1)
        print(f"descriptor distance {a} vs {b}: mean {distance.mean():.4f}, median {np.median(distance):.4f}, p95 {np.percentile(distance, 95):.4f}, max {distance.max():.4f}")
    print(f"{'chips':<22}{'age MAE':>9}{'CS@5':>8}{'gender':>9}{'race':>8}")
    for name, report in metrics.items():
        print(f"{name:<22}{report['age_mae']:>9.3f}{report['age_cs5']:>8.3f}{report['gender_accuracy']:>9.4f}{report['race_accuracy']:>8.4f}")


if __name__ == "__main__":
    main()
