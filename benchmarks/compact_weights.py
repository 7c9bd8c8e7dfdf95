"""Store a model's weights as float16 (heads.store_float16) and check it still scores the same.

    python benchmarks/compact_weights.py --heads logs/mixture/mixture-unfreeze.keras \
        --output weights/dlib-resnet-keras-finetuned.keras

Scores the float32 model and its float16 copy on the validation parts of the datasets given
(the cached activations of the model's own `howold train` run, flip-averaged), prints both and the
differences, and keeps the copy only if the age MAE moved by at most --max-mae-change years.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from face.backbones import create_backbone
from face.features import AugmentConfig
from face.heads import store_float16
from face.model import read_heads
from face.model_files import sidecar_path
from face.training import TrainConfig, load_parts

from mixture_experiments import score  # noqa: E402  (benchmarks/ is the script's folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", required=True, help="the float32 model (.keras with its .json sidecar)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--data", action="append", default=None, help="NAME=DIR, repeatable (default UTKFace and FairFace in ../shared/data)")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--fairface-limit", type=int, default=None, help="first N of FairFace's images, as the model's training run")
    parser.add_argument("--max-mae-change", type=float, default=0.05)
    args = parser.parse_args()

    source, output = Path(args.heads), Path(args.output)
    staging = output.with_name(output.stem + ".float16.keras")
    shutil.copy(source, staging)
    shutil.copy(sidecar_path(source), sidecar_path(staging))
    store_float16(staging)
    specs = tuple(args.data or ("utkface=../shared/data/utkface", "fairface=../shared/data/fairface"))
    # the training run's own views, so that its cached activations are read, not extracted again
    augment = AugmentConfig.from_dict(read_heads(source).metadata["training"]["augment"])
    config = TrainConfig(datasets=specs, detector=args.detector, augment=augment, limit={"fairface": args.fairface_limit})
    parts, backbone = load_parts(config), create_backbone(config.backbone)
    full, half = score(source, parts, backbone, config), score(staging, parts, backbone, config)
    keys = ("age_mae", "age_bin_accuracy", "gender_accuracy", "race_accuracy", "race7_accuracy")
    summary = {
        "bytes": {"float32": source.stat().st_size, "float16": staging.stat().st_size},
        **{kind: {key: [full[kind].get(key), half[kind].get(key)] for key in keys} for kind in full},
    }
    print(json.dumps(summary, indent=2))
    changes = [abs(full[kind]["age_mae"] - half[kind]["age_mae"]) for kind in full if full[kind].get("age_mae") is not None]
    if max(changes) > args.max_mae_change:
        staging.unlink()
        sidecar_path(staging).unlink()
        print(f"age MAE moved by {max(changes):.3f} years (> {args.max_mae_change}): float16 copy not kept", file=sys.stderr)
        return 1
    staging.replace(output)
    sidecar_path(staging).replace(sidecar_path(output))
    print(f"age MAE moved by {max(changes):.4f} years; wrote {output} ({output.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
