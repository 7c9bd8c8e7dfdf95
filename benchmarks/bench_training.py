"""Head training on cached UTKFace features: wall time and peak RSS.

Usage: python benchmarks/bench_training.py [--data ../shared/data/utkface] [--epochs 30]
Needs the feature cache of the default backbone for --data (the first run fills it;
`howold train` does the same). Goal: full head training < 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face.training import TrainConfig, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--backbone", default="dlib-resnet-keras")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        report = train(TrainConfig(data_dir=Path(args.data), backbone=args.backbone, epochs=args.epochs, patience=args.epochs,
                                   output=Path(scratch) / "heads.keras", logs_dir=Path(scratch), progress=False))
        total = time.perf_counter() - start
        import json

        metadata = json.loads((Path(scratch) / "heads.json").read_text())["training"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"images: train {metadata['train_images']}, validation {metadata['validation_images']}; epochs {args.epochs}")
    print(f"feature cache load: {metadata['feature_seconds']:.1f} s; head training (fit): {metadata['fit_seconds']:.1f} s; total {total:.1f} s")
    print(f"peak RSS: {peak_mb:.0f} MB")
    print(f"validation: age MAE {report['age_mae']:.2f}, CS@5 {report['age_cs5']:.3f}, gender {report['gender_accuracy']:.4f}, race {report['race_accuracy']:.4f}")


if __name__ == "__main__":
    main()
