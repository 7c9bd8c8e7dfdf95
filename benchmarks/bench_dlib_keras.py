"""Speed of dlib's face ResNet run by dlib (one face per call) and by the Keras rebuild (batched).

Usage: python benchmarks/bench_dlib_keras.py [--chips 64] [--batch 32]
Uses aligned UTKFace chips when ../shared/data/utkface exists, else random chips; the
speed does not depend on the content.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face.backbones.base import ChipSpec  # noqa: E402
from face.backbones.dlib_resnet import DlibResNet  # noqa: E402

UTKFACE = ROOT.parent / "shared/data/utkface"


def load_chips(count: int) -> tuple[np.ndarray, str]:
    paths = sorted(UTKFACE.glob("*.jpg.chip.jpg")) if UTKFACE.is_dir() else []
    if not paths:
        return np.random.default_rng(0).integers(0, 256, (count, 150, 150, 3), dtype=np.uint8), "random"
    from face.alignment import Aligner, crop_box
    from face.images import load_image

    aligner = Aligner()
    chips = []
    for path in paths[:: max(1, len(paths) // count)][:count]:
        image = load_image(path)
        chips.append(aligner.chips(image, [crop_box(image)], ChipSpec(150, 0.25))[0])
    return np.stack(chips), "UTKFace"


def timed(function, repeats: int = 1) -> float:
    """Best wall time of `repeats` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    chips, source = load_chips(args.chips)
    print(f"{len(chips)} {source} chips 150x150")

    dlib_net = DlibResNet()._net
    dlib_net.compute_face_descriptor(chips[0])  # warm up
    per_face = timed(lambda: [dlib_net.compute_face_descriptor(chip) for chip in chips])
    dlib_rate = len(chips) / per_face
    print(f"dlib, one face per call:          {dlib_rate:7.1f} images/s")

    from face.backbones.dlib_resnet_keras import DlibResNetKeras

    start = time.perf_counter()
    keras_backbone = DlibResNetKeras()
    keras_backbone.embed(chips[: args.batch], batch_size=args.batch)  # build, trace, warm up
    print(f"keras model build + first batch:  {time.perf_counter() - start:7.1f} s")
    batched = timed(lambda: keras_backbone.embed(chips, batch_size=args.batch), repeats=2)
    keras_rate = len(chips) / batched
    print(f"keras, batch {args.batch}:                  {keras_rate:7.1f} images/s")
    print(f"ratio keras / dlib:               {keras_rate / dlib_rate:7.2f}x")


if __name__ == "__main__":
    main()
