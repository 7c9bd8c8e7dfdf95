"""Recall, speed, smallest face and score threshold of the face detectors.

    python benchmarks/bench_detection.py [--fairface-limit N] [--detectors yunet,hog]

1. The four demo photos (../shared/demo): faces found and time at several detection sides
   (the longest side the detector sees; larger photos are shrunk to it).
2. The smallest face found at each side: scikit-image's astronaut pasted into a 3000x2000
   canvas with her face at widths from 6 to 160 px; the smallest width found, in the
   canvas's own pixels.
3. Score threshold: the share of FairFace's loose face crops (../shared/data/fairface) in
   which a face is found, and the demo photos' face counts, at each threshold; and the
   best score on photos without a face (scikit-image's coffee, rocket, chelsea, and the
   astronaut's mission patch).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT.parent / "shared/demo"
FAIRFACE = ROOT.parent / "shared/data/fairface"
PHOTOS = {
    "nasa_sts106_crew_on_iss_2000.jpg": 7,
    "obama_family_2011.jpg": 4,
    "nasa_astronaut_group21_2013.png": 8,
    "solvay_conference_1927.jpg": 29,
}
SIDES = (640, 960, 1280, 1600, 100_000)
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def side_name(side: int) -> str:
    return "native" if side >= 100_000 else str(side)


def timed_detect(detector, image, repeats: int = 3):
    best, found = float("inf"), []
    for _ in range(repeats):
        started = time.perf_counter()
        found = detector.detect(image)
        best = min(best, time.perf_counter() - started)
    return found, best * 1000


def demo_recall(method: str) -> None:
    from face.detection import FaceDetector
    from face.images import load_image

    print(f"\n1. {method}: faces found / expected, and best-of-3 time, per detection side")
    print(f"  {'photo':34s}" + "".join(f"{side_name(s):>16s}" for s in SIDES))
    for name, expected in PHOTOS.items():
        if not (DEMO / name).is_file():
            continue
        image = load_image(DEMO / name)
        cells = []
        for side in SIDES:
            found, ms = timed_detect(FaceDetector(method, max_side=side), image, 3 if method == "yunet" else 1)
            cells.append(f"{len(found):3d}/{expected:<3d}{ms:7.0f} ms")
        print(f"  {name:34s}" + "".join(f"{c:>16s}" for c in cells), flush=True)


def smallest_face(method: str) -> None:
    from PIL import Image
    from skimage import data

    from face.detection import FaceDetector

    astronaut = Image.fromarray(data.astronaut())
    face_width = 90  # her face in the 512-px photo
    print(f"\n2. {method}: smallest face found in a 3000x2000 photo, per detection side (face widths 6-160 px)")
    widths = [6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 120, 160]
    for side in SIDES[:-1] + (3000,):
        detector = FaceDetector(method, max_side=side)
        found_at = []
        for width in widths:
            size = max(8, round(512 * width / face_width))
            canvas = np.full((2000, 3000, 3), 110, np.uint8)
            canvas[700 : 700 + size, 1400 : 1400 + size] = np.asarray(astronaut.resize((size, size), Image.BICUBIC))
            if detector.detect(canvas):
                found_at.append(width)
        smallest = next((w for w in widths if all(v in found_at for v in widths if v >= w)), None)
        print(f"  side {side:>5d}: every face from {smallest} px wide found (found at: {found_at})", flush=True)


def thresholds(method: str, limit: int) -> None:
    from PIL import Image
    from skimage import data

    from face.detection import FaceDetector
    from face.images import load_image

    low = FaceDetector(method, threshold=0.05) if method == "yunet" else FaceDetector(method, threshold=-1.0)
    print(f"\n3. {method}: score threshold")
    patch = np.ascontiguousarray(data.astronaut()[300:460, 90:250])
    negatives = {
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "chelsea": data.chelsea(),
        "mission patch": patch,
        "mission patch x2": np.asarray(Image.fromarray(patch).resize((320, 320))),
    }
    for name, image in negatives.items():
        scores = [d.confidence for d in low.detect(np.ascontiguousarray(image[:, :, :3]))]
        print(f"  no face, {name:18s} best score {max(scores) if scores else 0:.3f}")
    demo_scores = {name: [d.confidence for d in low.detect(load_image(DEMO / name))] for name in PHOTOS if (DEMO / name).is_file()}
    for threshold in THRESHOLDS:
        counts = ", ".join(f"{sum(s >= threshold for s in scores)}/{PHOTOS[name]}" for name, scores in demo_scores.items())
        print(f"  threshold {threshold:.1f}: demo photos {counts}")
    paths = sorted((FAIRFACE / "train").glob("*.jpg"), key=lambda p: int(p.stem))[:limit] if FAIRFACE.is_dir() else []
    if not paths:
        print("  (no ../shared/data/fairface: FairFace recall skipped)")
        return
    best = []
    started = time.perf_counter()
    for path in paths:
        scores = [d.confidence for d in low.detect(load_image(path))]
        best.append(max(scores) if scores else -np.inf)
    per_image = (time.perf_counter() - started) / len(paths) * 1000
    best = np.array(best)
    print(f"  FairFace, {len(paths)} loose 224x224 face crops ({per_image:.1f} ms each with decoding):")
    for threshold in THRESHOLDS:
        print(f"    threshold {threshold:.1f}: a face found in {(best >= threshold).mean() * 100:6.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="yunet", help="comma-separated: yunet,hog,cnn")
    parser.add_argument("--fairface-limit", type=int, default=20_000)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: recall,smallest,thresholds")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for method in args.detectors.split(","):
        if "recall" not in skip and DEMO.is_dir():
            demo_recall(method)
        if "smallest" not in skip:
            smallest_face(method)
        if "thresholds" not in skip:
            thresholds(method, args.fairface_limit)


if __name__ == "__main__":
    main()
