"""Feature extraction throughput per backbone, as a share of the bare network's in the same run.

Usage: python benchmarks/bench_features.py [--images 128]
The bare network embeds chips already in memory; the pipeline reads, decodes and aligns
UTKFace files (or images it makes) and caches features. Goal: the pipeline costs < 20%.
The VGGFace2 ResNet50 runs with random weights (its file cannot be had offline); speed
does not depend on the weight values.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from face.alignment import Aligner, crop_box  # noqa: E402
from face.backbones import create_backbone  # noqa: E402
from face.backbones.base import KerasBackbone  # noqa: E402
from face.data import load_dataset  # noqa: E402
from face.features import AugmentConfig, extract_features  # noqa: E402
from face.images import load_image  # noqa: E402

UTKFACE = ROOT.parent / "shared/data/utkface"


class RandomVGGFace2(KerasBackbone):
    """The VGGFace2 ResNet50 architecture with random weights, for timing only."""

    name = "vggface2-resnet50 (random weights)"
    feature_size = 2048

    def __init__(self) -> None:
        from face.backbones import vggface2_resnet50 as vgg

        self.chip = vgg.VGGFace2ResNet50.chip
        self.preprocessing = vgg.preprocessing_description(self.chip.size)
        self._model = vgg.build_resnet50(self.chip.size)
        self._real = vgg.VGGFace2ResNet50

    @property
    def model(self):
        return self._model

    def preprocess(self, chips):
        return self._real.preprocess(self, chips)

    def fingerprint(self) -> str:
        return "random"


def dataset_folder(count: int, scratch: Path):
    if UTKFACE.is_dir():
        return load_dataset(UTKFACE, limit=count), "UTKFace"
    from conftest import make_utkface_folder

    return load_dataset(make_utkface_folder(scratch / "utk", count)), "made-up crops"


def measure(backbone, dataset, scratch: Path, batch_size: int) -> tuple[float, float]:
    aligner = Aligner()
    chips = np.stack([aligner.chips(image, [crop_box(image)], backbone.chip)[0] for image in (load_image(f.path) for f in dataset.faces)])
    backbone.embed(chips[:batch_size], batch_size)  # warm-up: graph tracing, allocations
    start = time.perf_counter()
    backbone.embed(chips, batch_size)
    bare = len(chips) / (time.perf_counter() - start)
    start = time.perf_counter()
    extract_features(backbone, dataset, AugmentConfig(views=1), cache_root=scratch / backbone.name.replace(" ", "_"), batch_size=batch_size, progress=False)
    pipeline = len(dataset) / (time.perf_counter() - start)
    return bare, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbones", nargs="*", default=["dlib-resnet", "dlib-resnet-keras", "vggface2-resnet50"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        dataset, source = dataset_folder(args.images, scratch)
        print(f"{len(dataset)} images ({source}), batch {args.batch}")
        print(f"{'backbone':36s} {'bare img/s':>10s} {'pipeline img/s':>15s} {'pipeline/bare':>14s} {'cost':>6s}")
        for name in args.backbones:
            backbone = RandomVGGFace2() if name == "vggface2-resnet50" else create_backbone(name)
            subset = dataset if name != "dlib-resnet" else dataset.subset(range(min(len(dataset), 32)))
            bare, pipeline = measure(backbone, subset, scratch, args.batch)
            print(f"{backbone.name:36s} {bare:10.1f} {pipeline:15.1f} {pipeline / bare:14.2f} {1 - pipeline / bare:6.0%}")


if __name__ == "__main__":
    main()
