"""What helps the heads: augmentation views, mixup and flip test-time augmentation.

Usage: python benchmarks/heads_experiments.py [--data ../shared/data/utkface] [--epochs 40]
Every row trains the heads from the same feature cache (4 views per image: plain,
mirrored, two random) on the same split, and prints validation metrics.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face.training import TrainConfig, train  # noqa: E402

EXPERIMENTS = {
    "plain view, no mixup, no TTA": dict(train_views=1, mixup_alpha=0.0, validation_views=(0,)),
    "+ flip TTA": dict(train_views=1, mixup_alpha=0.0),
    "+ mirrored view in training": dict(train_views=2, mixup_alpha=0.0),
    "+ 2 random views (shift, erasing)": dict(train_views=4, mixup_alpha=0.0),
    "+ mixup 0.2 (the default)": dict(train_views=4, mixup_alpha=0.2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/utkface"))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=None, help="row numbers to run (0-based)")
    args = parser.parse_args()
    print(f"{'#':>2s} {'experiment':36s} {'age MAE':>8s} {'CS@5':>6s} {'gender':>7s} {'race':>7s} {'fit s':>6s}")
    for number, (title, overrides) in enumerate(EXPERIMENTS.items()):
        if args.only is not None and str(number) not in args.only:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            config = TrainConfig(data_dir=Path(args.data), epochs=args.epochs, output=Path(scratch) / "h.keras", logs_dir=Path(scratch), progress=False, **overrides)
            start = time.perf_counter()
            report = train(config)
            print(f"{number:2d} {title:36s} {report['age_mae']:8.2f} {report['age_cs5']:6.3f} {report['gender_accuracy']:7.4f} {report['race_accuracy']:7.4f} {time.perf_counter() - start:6.0f}", flush=True)


if __name__ == "__main__":
    main()
