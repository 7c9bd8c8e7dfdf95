"""The design's VGGFace2 backbone against today's model: four arms, one table.

    python benchmarks/backbone_experiments.py --utkface ../shared/data/utkface \
        --fairface ../shared/data/fairface --fairface-extra ../shared/data/fairface2 \
        [--design logs/facenet/vggface2-facenet.keras]

  (a) control      the shipped model (dlib-resnet-keras-finetuned) with its own heads, and its
                   recipe's heads retrained here on the same data, for the seed's spread
  (b) design       frozen FaceNet (vggface2-facenet, the 1792-d pooled layer) under three heads:
                   the model `howold train --backbone vggface2-facenet` wrote (--design), and
                   heads fitted here with the fused arm's recipe
  (c) fused        the shipped network's fine-tuned features and FaceNet's, side by side, into
                   the same heads
  (d) more data    today's recipe (heads on the shipped network's features, plain, mirrored
                   and one random view) with fairface-extra's 5,000 FairFace images added

The shipped network's stages stay as they are in every arm (unfreezing again costs hours here),
so (d) measures what the images add to the heads. Arms (b) and (c) train on the plain and
mirrored views (FaceNet's features are cached for those two); heads are fitted as in
age_training_experiments (20 epochs, seed 42). Validation is training's own: the 15% parts
(seed 42) of UTKFace and FairFace's `fairface/` folder, identical in every arm; fairface-extra
only trains. Every arm is scored with age_training_experiments' readouts (cross-fitted on
UTKFace's validation halves), at full size and with the chips shrunk to 72 and 48 px. Intervals:
the 90% bootstrap over validation faces of each figure's difference to the control.
"ms a face": the warm end-to-end time of `Analyzer.analyze` on the demo photos (../shared/demo),
divided by the faces found, for the shipped model and the design model.
Writes notebooks/backbone_results.{json,md}. Features are cached (~/.howold/features).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from age_training_experiments import (  # noqa: E402
    SHIPPED_READOUT, SMALL_SIDES, arm_probabilities, figures, pct, score_arm, shipped_heads, slug, train_arm,
)

FACENET = "vggface2-facenet"
FACENET_AUGMENT = {"views": 2}
#: plain, mirrored and one random view: the views today's recipe trains on
FINETUNED_AUGMENT = {"views": 3}
ARMS = (
    {"name": "(a) today's recipe, heads retrained", "features": "finetuned", "data": "base", "views": (0, 1, 2)},
    {"name": "(b) FaceNet, heads fitted here", "features": "facenet", "data": "extra", "views": (0, 1)},
    {"name": "(c) fused: fine-tuned + FaceNet", "features": "fused", "data": "extra", "views": (0, 1)},
    {"name": "(c') fine-tuned alone, same recipe as (c)", "features": "finetuned", "data": "extra", "views": (0, 1)},
    {"name": "(d) today's recipe + fairface-extra", "features": "finetuned", "data": "extra", "views": (0, 1, 2)},
)
BOOTSTRAP = 1000


def load(args) -> dict:
    """Parts of both mixtures and each backbone's features (all views) and small-face features."""
    from face.backbones import create_backbone
    from face.features import AugmentConfig, extract_features
    from face.training import TrainConfig, load_parts, mixture_activations

    datasets = (f"utkface={args.utkface}", f"fairface={args.fairface}")
    backbones = {"finetuned": (create_backbone("finetuned-features", weights=args.model), FINETUNED_AUGMENT), "facenet": (create_backbone(FACENET), FACENET_AUGMENT)}
    loaded = {}
    for data, specs in (("base", datasets), ("extra", datasets + (f"fairface-extra={args.fairface_extra}",))):
        for name, (backbone, augment) in backbones.items():
            if name == "facenet" and data == "base":
                continue
            config = TrainConfig(datasets=specs, detector=args.detector, augment=AugmentConfig(**augment))
            parts = load_parts(config)
            started = time.perf_counter()
            features = mixture_activations(backbone, parts, (None,), config)[None]
            small = {side: {p.kind: extract_features(backbone, p.validation, AugmentConfig(views=2, resolution=side), detector=args.detector) for p in parts if len(p.validation)} for side in SMALL_SIDES}
            loaded[(name, data)] = {"config": config, "parts": [p for p in parts], "features": features, "small": small}
            print(f"{name} on {data}: features {features.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    finetuned, facenet = loaded[("finetuned", "extra")], loaded[("facenet", "extra")]
    fused = np.concatenate([np.asarray(finetuned["features"][np.arange(len(finetuned["features"]))][:, :2], np.float32), np.asarray(facenet["features"][np.arange(len(facenet["features"]))], np.float32)], axis=-1)
    small = {side: {kind: np.concatenate([np.asarray(finetuned["small"][side][kind][np.arange(len(values))], np.float32), np.asarray(values[np.arange(len(values))], np.float32)], axis=-1) for kind, values in per_kind.items()} for side, per_kind in facenet["small"].items()}
    loaded[("fused", "extra")] = {**facenet, "features": fused, "small": small}
    return loaded


def training_prior(loaded: dict) -> np.ndarray:
    from face.heads import training_age_prior
    from face.training import mixture_labels

    labels = mixture_labels([part.train for part in loaded["parts"]])
    return training_age_prior(labels["age"], labels["age_bin"])


def bootstrap_difference(control: dict, arm: dict, rng: np.random.Generator) -> dict:
    """90% intervals of (arm - control) for UTKFace MAE and FairFace's age in bin, resampling the
    validation faces; both are scored with the shipped readout (cross-fitted), face by face."""
    result = {}
    for key, kind, per_face in (("utk_mae", "utkface", "age_error"), ("ff_bin", "fairface", "in_bin")):
        a, b = np.asarray(control[kind][per_face], np.float64), np.asarray(arm[kind][per_face], np.float64)
        draws = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
        differences = b[draws].mean(axis=1) - a[draws].mean(axis=1)
        result[key] = {"difference": round(float(b.mean() - a.mean()), 4), "low": round(float(np.quantile(differences, 0.05)), 4), "high": round(float(np.quantile(differences, 0.95)), 4)}
    return result


def per_face(model, loaded: dict, prior: np.ndarray) -> dict:
    """Each validation face's absolute age error (UTKFace) and age-in-bin hit (FairFace), with the
    shipped readout fitted on all of UTKFace's validation faces, as a sidecar holds it."""
    from age_readout_experiments import fit
    from age_training_experiments import READOUTS

    from face.data import AGE_BINS

    lever = next(r for r in READOUTS if r["name"] == SHIPPED_READOUT)
    data = arm_probabilities(model, scored_part(loaded))["full"]
    readout = fit(lever, prior, data["utkface"]["flip"]["age"], data["utkface"]["labels"]["age"])
    utk = readout.point_of(readout.apply(np.asarray(data["utkface"]["flip"]["age"], np.float64)))
    ff = readout.point_of(readout.apply(np.asarray(data["fairface"]["flip"]["age"], np.float64)))
    bins = np.asarray(data["fairface"]["labels"]["age_bin"])
    known = bins >= 0
    low, high = np.array(AGE_BINS)[bins[known]].T
    return {"utkface": {"age_error": np.abs(utk - data["utkface"]["labels"]["age"]).tolist()}, "fairface": {"in_bin": ((ff[known] >= low) & (ff[known] < high + 1)).astype(float).tolist()}}


def scored_part(loaded: dict) -> dict:
    """`loaded` with only the parts that have validation faces (fairface-extra only trains)."""
    return {**loaded, "parts": [p for p in loaded["parts"] if len(p.validation)]}


def ms_a_face(heads: Path, demo: Path) -> dict | None:
    """Warm end-to-end ms a face of Analyzer.analyze on the demo photos (three passes, the best)."""
    from face import Analyzer
    from face.images import load_image

    photos = sorted(p for p in demo.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        return None
    analyzer = Analyzer(model=heads)
    images = [load_image(p) for p in photos]
    faces = sum(len(analyzer.analyze(image)) for image in images)
    best = min(_timed(lambda: [analyzer.analyze(image) for image in images]) for _ in range(3))
    return {"photos": len(photos), "faces": faces, "seconds": round(best, 3), "ms_a_face": round(1000 * best / max(faces, 1), 1)}


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utkface", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--fairface", type=Path, default=Path("../shared/data/fairface"))
    parser.add_argument("--fairface-extra", type=Path, default=Path("../shared/data/fairface2"))
    parser.add_argument("--demo", type=Path, default=Path("../shared/demo"))
    parser.add_argument("--model", type=Path, default=Path(__file__).parents[1] / "weights" / "dlib-resnet-keras-finetuned.keras", help="today's model")
    parser.add_argument("--design", type=Path, default=Path("logs/facenet/vggface2-facenet.keras"), help="the model `howold train --backbone vggface2-facenet` wrote")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--logs", type=Path, default=Path("logs/backbone_experiments"))
    parser.add_argument("--output", type=Path, default=Path("notebooks/backbone_results"))
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the results .json, nothing else")
    args = parser.parse_args()
    if args.markdown_only:
        args.output.with_suffix(".md").write_text(markdown(json.loads(args.output.with_suffix(".json").read_text())))
        return
    import keras

    from face.training import heads_config_of

    args.model_path = args.model
    loaded = load(args)
    rng = np.random.default_rng(42)
    results = {"model": args.model.name, "design": str(args.design), "epochs": args.epochs, "small_sides": list(SMALL_SIDES), "arms": {}}
    base = loaded[("finetuned", "base")]
    results["faces"] = {part.kind: len(part.validation) for part in base["parts"] if len(part.validation)}
    results["train_images"] = {data: int(sum(len(p.train) for p in loaded[("finetuned", data)]["parts"])) for data in ("base", "extra")}
    prior = training_prior(base)
    control = shipped_heads(args.model, heads_config_of(base["config"], base["features"].shape[-1]))
    control_faces = per_face(control, base, prior)
    arms = results["arms"]
    arms["shipped"] = {"name": f"(a) today's model ({args.model.stem}), its own heads", "readouts": score_arm(control, scored_part(base), prior), "speed": ms_a_face(args.model, args.demo)}
    print("shipped scored", flush=True)
    if args.design.is_file():
        design = loaded[("facenet", "extra")]
        prior_extra = training_prior(design)
        model = keras.models.load_model(args.design, compile=False)
        arms["design"] = {
            "name": "(b) the design model (howold train --backbone vggface2-facenet)", "readouts": score_arm(model, scored_part(design), prior_extra),
            "versus_shipped": bootstrap_difference(control_faces, per_face(model, design, prior_extra), rng), "speed": ms_a_face(args.design, args.demo),
        }
        print("design scored", flush=True)
    for arm in ARMS:
        data = loaded[(arm["features"], arm["data"])]
        prior_arm = training_prior(data)
        started = time.perf_counter()
        keras.utils.set_random_seed(42)
        best = train_arm(arm, data, prior_arm, args, heads_config_of(data["config"], data["features"].shape[-1]))
        model = keras.models.load_model(best, compile=False)
        arms[slug(arm["name"])] = {
            **arm, "views": list(arm["views"]), "fit": json.loads((best.parent / "fitted.json").read_text()), "readouts": score_arm(model, scored_part(data), prior_arm),
            "versus_shipped": bootstrap_difference(control_faces, per_face(model, data, prior_arm), rng),
        }
        print(f"{arm['name']} scored ({time.perf_counter() - started:.0f} s)", flush=True)
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results))
    print(f"written {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")


def markdown(results: dict) -> str:
    arms = results["arms"]
    speed = {key: arm.get("speed") for key, arm in arms.items() if arm.get("speed")}
    lines = [
        "# Backbones: the design's VGGFace2 FaceNet against today's model",
        "",
        f"Validation: UTKFace {results['faces']['utkface']:,} and FairFace {results['faces']['fairface']:,} faces (15% of each, seed 42; fairface-extra only trains),",
        "flip-averaged, read out with the prior division and calibrated interval cross-fitted on UTKFace's halves.",
        f"Training images: {results['train_images']['base']:,} (UTKFace + FairFace) or {results['train_images']['extra']:,} (with fairface-extra).",
        "Δ: the arm minus today's model, with the 90% bootstrap interval over validation faces (readout fitted on all of UTKFace's validation faces).",
        "Command: `python benchmarks/backbone_experiments.py`.",
        "",
        "| arm | UTK MAE | Δ UTK MAE | UTK worst band bias | UTK band coverage | UTK Asian MAE | FF age bin | Δ FF age bin | FF worst bin | FF gender 3-9 | UTK gender | UTK race | FF gender | FF race | FF race7 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, arm in arms.items():
        f = figures(arm)
        low, high = f["utk_coverage"]
        versus = arm.get("versus_shipped")
        mae = f"{versus['utk_mae']['difference']:+.2f} ({versus['utk_mae']['low']:+.2f} to {versus['utk_mae']['high']:+.2f})" if versus else "—"
        band = f"{100 * versus['ff_bin']['difference']:+.1f} ({100 * versus['ff_bin']['low']:+.1f} to {100 * versus['ff_bin']['high']:+.1f})" if versus else "—"
        lines.append(
            f"| {arm['name']} | {f['utk_mae']:.2f} | {mae} | {f['utk_worst_bias']:+.2f} | {pct(low)}-{pct(high)} | {f['asian_mae']:.2f} | {pct(f['ff_bin'])} | {band} | {pct(f['ff_worst_bin'])} | "
            f"{pct(f['ff_gender_3_9'])} | {pct(f['utk_gender'])} | {pct(f['utk_race'])} | {pct(f['ff_gender'])} | {pct(f['ff_race'])} | {pct(f['ff_race7'])} |"
        )
    bins = list(next(iter(arms.values()))["readouts"][SHIPPED_READOUT]["full"]["fairface"]["by_age_bin"])
    lines += ["", "FairFace's age in the right bin, bin by bin:", "", "| arm | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
    for arm in arms.values():
        groups = arm["readouts"][SHIPPED_READOUT]["full"]["fairface"]["by_age_bin"]
        lines.append(f"| {arm['name']} | " + " | ".join(pct(groups[b].get("age_in_bin_accuracy")) for b in bins) + " |")
    lines += ["", "UTKFace MAE under each readout:", ""]
    readouts = list(next(iter(arms.values()))["readouts"])
    lines += ["| arm | " + " | ".join(readouts) + " |", "|---|" + "---|" * len(readouts)]
    for arm in arms.values():
        lines.append(f"| {arm['name']} | " + " | ".join(f"{arm['readouts'][r]['full']['utkface']['age_mae']:.2f}" for r in readouts) + " |")
    sides = results["small_sides"]
    lines += ["", "Small faces (chips shrunk to " + " and ".join(f"{s} px" for s in sides) + ", read out as at full size):", ""]
    lines += ["| arm | " + " | ".join(f"UTK MAE {s} | FF age bin {s}" for s in sides) + " |", "|---|" + "---|---|" * len(sides)]
    for arm in arms.values():
        f = figures(arm)
        lines.append(f"| {arm['name']} | " + " | ".join(f"{f[f'utk_mae_{s}']:.2f} | {pct(f[f'ff_bin_{s}'])}" for s in sides) + " |")
    if speed:
        lines += ["", "Speed, warm, end to end (detection, alignment, network, readout) on the demo photos:", "", "| model | photos | faces | seconds | ms a face |", "|---|---|---|---|---|"]
        for key, s in speed.items():
            lines.append(f"| {arms[key]['name']} | {s['photos']} | {s['faces']} | {s['seconds']:.2f} | {s['ms_a_face']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
