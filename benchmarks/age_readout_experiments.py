"""How the age is read out of the shipped model's distribution: the pull of the training prior,
the width of the 10-90% interval, and flip averaging, each measured by age band.

    python benchmarks/age_readout_experiments.py --utkface ../shared/data/utkface --fairface ../shared/data/fairface

The network is not retrained: every lever acts on the probabilities the shipped model gives
for each dataset's validation part (its own 15% split, seed 42, as in training), computed once
(plain view and flip-averaged) and cached under logs/age_readout/. Levers:

  shipped              the readout as it was: expectation of the distribution, its 10-90% percentiles
  prior alpha=A        the distribution divided by the training prior^A before the readout
  + temperature T      the distribution raised to 1/T (T > 1 wider, < 1 sharper) after that
  plain / flip         one view, or the plain and mirrored chips averaged

alpha and T are chosen by cross-fitting: the validation faces (both datasets) are split in two
halves by a fixed seed; each half's figures come from the parameters chosen on the other half,
and the shipped parameters are the ones chosen on all of it. Writes
notebooks/age_readout_results.json and .md; the probability caches make a rerun take seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATASETS = ("utkface", "fairface")


def validation_probabilities(kind: str, root: Path, heads_path: Path | None, cache: Path, detector: str) -> dict:
    """{"flip": probs, "plain": probs, "labels": ..., "train_labels": ...} for a dataset's validation
    part, from cache/<kind>.npz when it is there."""
    path = cache / f"{kind}.npz"
    if path.is_file():
        stored = np.load(path)
        return unpack(stored)
    from face.backbones import create_backbone
    from face.data import load_named, split_dataset
    from face.features import AugmentConfig, extract_activations
    from face.heads import default_heads_path, load_heads, predict_views

    dataset = load_named(kind, root)
    train_part, validation = split_dataset(dataset, 0.15, 42)
    network = create_backbone()
    heads_path = heads_path or default_heads_path(network)
    trained = load_heads(heads_path)
    started = time.perf_counter()
    values = extract_activations(network, validation, (trained.boundary,), AugmentConfig(views=2), detector=detector)[trained.boundary]
    values = values[np.arange(len(validation))]
    arrays = {}
    for name, views in (("flip", (0, 1)), ("plain", (0,))):
        for head, probabilities in predict_views(trained.model, values, views).items():
            arrays[f"{name}_{head}"] = probabilities.astype(np.float32)
    for name, value in validation.labels().items():
        arrays[f"labels_{name}"] = value
    for name, value in train_part.labels().items():
        arrays[f"train_{name}"] = value
    arrays["seconds"] = np.array(time.perf_counter() - started)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)
    return unpack(np.load(path))


def unpack(stored) -> dict:
    result: dict = {"flip": {}, "plain": {}, "labels": {}, "train_labels": {}}
    for key in stored.files:
        if key == "seconds":
            continue
        prefix, _, name = key.partition("_")
        target = {"flip": "flip", "plain": "plain", "labels": "labels", "train": "train_labels"}[prefix]
        result[target][name] = stored[key]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utkface", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--fairface", type=Path, default=Path("../shared/data/fairface"))
    parser.add_argument("--heads", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--cache", type=Path, default=Path("logs/age_readout"))
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--output", type=Path, default=Path("notebooks/age_readout_results"))
    parser.add_argument("--probabilities-only", action="store_true", help="compute and cache the probabilities, nothing else")
    args = parser.parse_args()
    data = {kind: validation_probabilities(kind, getattr(args, kind), args.heads, args.cache, args.detector) for kind in DATASETS}
    if args.probabilities_only:
        print({kind: len(part["labels"]["gender"]) for kind, part in data.items()})
        return


if __name__ == "__main__":
    main()
