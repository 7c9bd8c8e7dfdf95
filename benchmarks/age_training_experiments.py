"""Training levers for ages across the lifespan: low-resolution views and age-balanced weights,
each measured by age band, at full size and on small faces.

    python benchmarks/age_training_experiments.py --utkface ../shared/data/utkface --fairface ../shared/data/fairface \
        [--ship weights/dlib-resnet-keras-finetuned.keras --ship-arm KEY]

Every arm retrains the heads on the features of the shipped fine-tuned network (backbone
"finetuned-features": its unfrozen stages stay as they are), so an arm costs minutes on a CPU,
not the hours of unfreezing again. Arms start from new heads (20 epochs) or, "warm", from the
shipped heads (6 epochs at a fifth of the learning rate). The control arms keep the shipped
recipe (plain, mirrored and one random view per image); the others change one thing:

  low-res views        a fourth view per image, shrunk to a chip side of 32-112 px (faces about
                       21-75 px wide) and scaled back up (features.AugmentConfig.low_resolution_views)
  low-res in place     the low-resolution view instead of the full-size random one
  balanced β           the rows' losses weighted by prior(age)^-β (the training parts' age prior,
                       heads.training_age_prior), so that rare ages weigh more
  and their combinations.

Splits are training's own (15% of each dataset, seed 42). Every arm is read out as the shipped
model is: its validation probabilities (flip-averaged) get a prior division and calibrated
interval whose parameters are cross-fitted on UTKFace's validation halves
(age_readout_experiments.score); FairFace is never used for choosing. Each arm is also scored
with the validation chips shrunk to a side of 72 and 48 px (faces about 48 and 32 px wide), read
out as at full size. Writes notebooks/age_training_results.{json,md}; features are cached
(~/.howold/features), and a rerun only scores arms whose heads exist under logs/age_training/.
`--ship` puts one arm's heads onto the model (float16, like the shipped file), with the readouts
chosen for them in its sidecar, and exports it to ONNX.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

#: chip sides the validation faces are also scored at
SMALL_SIDES = (72, 48)
TRAIN_AUGMENT = {"views": 4, "low_resolution_views": 1}
BETAS = (0.5, 1.0)
ARMS = (
    {"name": "control (shipped recipe)", "views": (0, 1, 2)},
    {"name": "low-res views", "views": (0, 1, 2, 3)},
    {"name": "low-res in place", "views": (0, 1, 3)},
    *({"name": f"balanced β={beta}", "views": (0, 1, 2), "beta": beta} for beta in BETAS),
    *({"name": f"balanced β={beta} + low-res views", "views": (0, 1, 2, 3), "beta": beta} for beta in BETAS),
    # warm: the shipped heads trained on, WARM_EPOCHS at WARM_LEARNING_RATE
    {"name": "warm control", "views": (0, 1, 2), "warm": True},
    {"name": "warm + low-res views", "views": (0, 1, 2, 3), "warm": True},
    {"name": "warm + low-res views + balanced β=0.5", "views": (0, 1, 2, 3), "warm": True, "beta": 0.5},
    {"name": "warm + low-res in place", "views": (0, 1, 3), "warm": True},
)
WARM_EPOCHS = 6
WARM_LEARNING_RATE = 2e-4


def load_features(args) -> dict:
    """Training parts, their features (all views) and the validation parts' features at each small side."""
    from face.backbones import create_backbone
    from face.features import AugmentConfig, extract_features
    from face.training import TrainConfig, load_parts, mixture_activations

    config = TrainConfig(datasets=(f"utkface={args.utkface}", f"fairface={args.fairface}"), detector=args.detector, augment=AugmentConfig(**TRAIN_AUGMENT))
    parts = load_parts(config)
    backbone = create_backbone("finetuned-features", weights=args.model)
    started = time.perf_counter()
    features = mixture_activations(backbone, parts, (None,), config)[None]
    small = {
        side: {part.kind: extract_features(backbone, part.validation, AugmentConfig(views=2, resolution=side), detector=args.detector) for part in parts}
        for side in SMALL_SIDES
    }
    return {"config": config, "parts": parts, "features": features, "small": small, "seconds": time.perf_counter() - started}


#: the readouts every arm is scored with (age_readout_experiments' levers)
READOUTS = (
    {"name": "raw", "view": "flip", "point": "mean"},
    {"name": "median + calibrated interval", "view": "flip", "point": "median", "calibrate": True},
    {"name": "prior÷, median + calibrated interval", "view": "flip", "point": "median", "fit_alpha": True, "calibrate": True},
)
SHIPPED_READOUT = READOUTS[-1]["name"]
#: sidecar readout name -> the readout lever it is
SIDECAR_READOUTS = {"default": SHIPPED_READOUT, "least-error": "median + calibrated interval"}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def row_weights(labels: dict, prior: np.ndarray, beta: float) -> np.ndarray:
    """prior(age)^-beta per row, mean 1: a face with only a bin takes the bin's mean prior."""
    from face.data import AGE_BINS

    bin_prior = np.array([prior[low : high + 1].mean() for low, high in AGE_BINS])
    ages, bins = labels["age"], labels["age_bin"]
    density = np.where(ages >= 0, prior[np.clip(ages, 0, len(prior) - 1)], bin_prior[np.clip(bins, 0, len(AGE_BINS) - 1)])
    weights = density**-beta
    return (weights / weights.mean()).astype(np.float32)


def train_arm(arm: dict, loaded: dict, prior: np.ndarray, args, heads_config) -> Path:
    """The arm's best heads (logs/age_training/<arm>/best.keras), fitted unless they exist."""
    from face.training import fit_heads, make_targets, mixture_labels, mixture_rows

    run_dir = args.logs / slug(arm["name"])
    best = run_dir / "best.keras"
    if best.is_file() and (run_dir / "fitted.json").is_file():
        return best
    parts, features = loaded["parts"], loaded["features"]
    train_rows, validation_rows = mixture_rows(parts, "train"), mixture_rows(parts, "validation")
    views = list(arm["views"])
    train_x = np.asarray(features[train_rows], np.float32)[:, views].reshape(len(train_rows) * len(views), -1)
    labels = mixture_labels([part.train for part in parts])
    train_y = {name: np.repeat(value, len(views), axis=0) for name, value in make_targets(labels, heads_config).items()}
    weights = np.repeat(row_weights(labels, prior, arm["beta"]), len(views)) if arm.get("beta") else None
    validation = (np.asarray(features[validation_rows, 0], np.float32), make_targets(mixture_labels([part.validation for part in parts]), replace(heads_config, label_smoothing=0.0)))
    config = replace(loaded["config"], epochs=args.epochs, progress=False)
    start_from = None
    if arm.get("warm"):
        config = replace(config, epochs=WARM_EPOCHS, learning_rate=WARM_LEARNING_RATE)
        start_from = shipped_heads(args.model_path, heads_config)
    seconds = fit_heads(heads_config, config, train_x, train_y, validation, best, weights, start_from)
    (run_dir / "fitted.json").write_text(json.dumps({"fit_seconds": round(seconds, 1), "rows": len(train_x), "epochs": config.epochs, "learning_rate": config.learning_rate}))
    return best


def arm_probabilities(model, loaded: dict) -> dict:
    """{scale: {kind: {"flip", "plain", "labels", "train_labels"}}}: scale "full" and each small side."""
    from face.model import predict_views

    parts, features = loaded["parts"], loaded["features"]
    scales = {"full": {part.kind: np.asarray(features[part.validation_rows, :2]) for part in parts}}
    for side, per_kind in loaded["small"].items():
        scales[str(side)] = {kind: np.asarray(values[np.arange(len(values))]) for kind, values in per_kind.items()}
    result = {}
    for scale, per_kind in scales.items():
        result[scale] = {}
        for part in parts:
            values = per_kind[part.kind]
            result[scale][part.kind] = {
                "flip": predict_views(model, values, (0, 1)),
                "plain": predict_views(model, values, (0,)),
                "labels": part.validation.labels(),
                "train_labels": part.train.labels(),
            }
    return result


def small_scores(readout_entry: dict, prior: np.ndarray, data: dict) -> dict:
    """Figures for small faces, read out as at full size (a user's photo does not say how small
    its faces are): the readout chosen on all of UTKFace's full-size validation faces."""
    from age_readout_experiments import BAND_SUMMARY, SUMMARY, band_figures

    from face.evaluation import compute_metrics
    from face.readout import AgeReadout

    readout = AgeReadout.from_dict({**readout_entry, "prior": list(prior) if readout_entry.get("alpha") else None})
    result = {}
    for kind, part in data.items():
        report = compute_metrics(part["flip"], part["labels"], readout)
        entry = {k: report[k] for k in SUMMARY if k in report}
        entry["by_age_bin"] = {b: {k: g[k] for k in BAND_SUMMARY if k in g} for b, g in report["by_age_bin"].items()}
        if kind == "utkface":
            entry["bands"] = band_figures(readout, part["flip"]["age"], part["labels"]["age"])
        result[kind] = entry
    return result


def score_arm(model, loaded: dict, prior: np.ndarray) -> dict:
    from age_readout_experiments import score

    probabilities = arm_probabilities(model, loaded)
    readouts = {}
    for lever in READOUTS:
        scored = score(lever, prior, probabilities["full"])
        entry = {"full": scored["datasets"], "readout": scored["readout"]}
        for scale, data in probabilities.items():  # "full" again: read out as shipped, not cross-fitted
            entry[scale if scale != "full" else "full_as_shipped"] = small_scores(scored["readout"], prior, data)
        readouts[lever["name"]] = entry
    return readouts


def shipped_heads(model_path: Path, heads_config):
    """The shipped model's own heads, as a model on its features: the reference row."""
    from face.heads import build_heads, copy_head_weights
    from face.model import load_heads

    heads = build_heads(heads_config)
    copy_head_weights(load_heads(model_path).model, heads)
    return heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utkface", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--fairface", type=Path, default=Path("../shared/data/fairface"))
    parser.add_argument("--model", type=Path, default=None, help="the fine-tuned model whose features the heads learn from (default: the shipped one)")
    parser.add_argument("--detector", default="yunet")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--logs", type=Path, default=Path("logs/age_training"))
    parser.add_argument("--output", type=Path, default=Path("notebooks/age_training_results"))
    parser.add_argument("--only", action="append", default=[], help="run only the arms whose names contain this (repeatable)")
    parser.add_argument("--extract-only", action="store_true", help="compute and cache the features, nothing else")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the results .json, nothing else")
    parser.add_argument("--ship", type=Path, default=None, metavar="MODEL.keras", help="write the fine-tuned model with --ship-arm's heads here (with its sidecar and ONNX export)")
    parser.add_argument("--ship-arm", default=None, help="the arm (its key in the results) whose heads --ship writes")
    args = parser.parse_args()
    if args.markdown_only:
        args.output.with_suffix(".md").write_text(markdown(json.loads(args.output.with_suffix(".json").read_text())))
        return
    loaded = load_features(args)
    print(f"features {loaded['features'].shape} in {loaded['seconds']:.0f} s", flush=True)
    if args.extract_only:
        return
    import keras

    from face.heads import training_age_prior

    from face.model import read_heads
    from face.training import heads_config_of, mixture_labels

    model_path = args.model_path = args.model or Path(__file__).parents[1] / "weights" / "dlib-resnet-keras-finetuned.keras"
    shipped = read_heads(model_path)
    heads_config = heads_config_of(loaded["config"], loaded["features"].shape[-1])
    train_labels = mixture_labels([part.train for part in loaded["parts"]])
    prior = training_age_prior(train_labels["age"], train_labels["age_bin"])
    results_path = args.output.with_suffix(".json")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update({
        "model": str(model_path), "heads_sha256": shipped.metadata["onnx"]["keras_sha256"], "epochs": args.epochs,
        "faces": {part.kind: len(part.validation) for part in loaded["parts"]}, "train_images": int(sum(len(p.train) for p in loaded["parts"])),
        "small_sides": list(SMALL_SIDES), "train_augment": TRAIN_AUGMENT,
    })
    arms = results.setdefault("arms", {})
    keras.utils.set_random_seed(42)
    if not args.only or any(o in "shipped" for o in args.only):
        started = time.perf_counter()
        arms["shipped"] = {"name": f"{model_path.name}'s own heads", "views": [0, 1, 2, 3], "readouts": score_arm(shipped_heads(model_path, heads_config), loaded, prior)}
        print(f"shipped scored in {time.perf_counter() - started:.0f} s", flush=True)
    for arm in ARMS:
        if args.only and not any(o in arm["name"] for o in args.only):
            continue
        started = time.perf_counter()
        keras.utils.set_random_seed(42)
        best = train_arm(arm, loaded, prior, args, heads_config)
        model = keras.models.load_model(best, compile=False)
        arms[slug(arm["name"])] = {**arm, "views": list(arm["views"]), "fit": json.loads((best.parent / "fitted.json").read_text()), "readouts": score_arm(model, loaded, prior)}
        print(f"{arm['name']}: {summary_line(arms[slug(arm['name'])])} ({time.perf_counter() - started:.0f} s)", flush=True)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results))
    print(f"written {results_path} and {args.output.with_suffix('.md')}")
    if args.ship:
        print(f"written {ship(args.ship_arm, results, args, prior)}")


def ship(key: str, results: dict, args, prior: np.ndarray) -> Path:
    """Put an arm's heads onto the fine-tuned model, stored as float16 like the shipped file, with
    the readouts chosen for them, and export it (ONNX): written to `args.ship`."""
    import keras

    from face.heads import copy_head_weights, export_if_possible, store_float16

    from face.model import load_heads

    from face.model_files import sidecar_path

    arm = results["arms"][key]
    trained = load_heads(args.model_path)
    copy_head_weights(keras.models.load_model(args.logs / key / "best.keras", compile=False), trained.model)
    metadata = json.loads(json.dumps(trained.metadata))
    metadata.pop("onnx", None)
    metadata["training"]["heads_retrained"] = {
        "arm": arm["name"], "views": arm["views"], "beta": arm.get("beta"), "warm": bool(arm.get("warm")), **arm["fit"],
        "augment": TRAIN_AUGMENT, "features_of": trained.metadata["onnx"]["sha256"],
        "command": "python benchmarks/age_training_experiments.py --ship " + str(args.ship) + f" --ship-arm {key}",
    }
    readouts = arm["readouts"]
    default = dict(readouts[SIDECAR_READOUTS["default"]]["readout"])
    default["prior"] = [round(float(v), 6) for v in prior] if default.get("alpha") else None
    metadata["readout"] = {
        **default,
        "options": {name: readouts[lever]["readout"] for name, lever in SIDECAR_READOUTS.items() if name != "default"},
        "chosen_on": "validation parts (15%, seed 42) of UTKFace, cross-fitted: benchmarks/age_training_experiments.py, notebooks/age_training_results.md",
    }
    full = readouts[SHIPPED_READOUT]["full"]
    metadata["validation"] = {
        "note": "flip-averaged, default readout, cross-fitted (age_training_experiments)",
        "datasets": {kind: {k: full[kind][k] for k in ("n", "age_mae", "age_bin_accuracy", "age_in_bin_accuracy", "gender_accuracy", "race_accuracy", "race7_accuracy") if k in full[kind]} for kind in ("utkface", "fairface")},
    }
    target = Path(args.ship)
    temporary = target.with_name(target.stem + "-float32.keras")
    trained.model.save(temporary)
    store_float16(temporary)
    temporary.replace(target)
    sidecar_path(target).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    export_if_possible(target)
    return target


def figures(arm: dict, readout: str = SHIPPED_READOUT) -> dict:
    """The table's figures of one arm."""
    entry = arm["readouts"][readout]
    full, utk, ff = entry["full"], entry["full"]["utkface"], entry["full"]["fairface"]
    bands = utk["bands"]
    wild = [ff["by_age_bin"][b]["age_in_bin_accuracy"] for b in ("3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69") if b in ff["by_age_bin"]]
    small = {side: entry[str(side)] for side in SMALL_SIDES if str(side) in entry}
    shipped = entry.get("full_as_shipped", {})
    return {
        "utk_mae": utk["age_mae"],
        "utk_mae_as_shipped": shipped.get("utkface", {}).get("age_mae"),
        "ff_bin_as_shipped": shipped.get("fairface", {}).get("age_in_bin_accuracy"),
        "utk_worst_bias": max((b["age_mean_signed_error"] for b in bands.values()), key=abs),
        "utk_coverage": (min(b["interval_coverage"] for b in bands.values()), max(b["interval_coverage"] for b in bands.values())),
        "asian_mae": full["utkface_asian"]["age_mae"],
        "ff_bin": ff["age_in_bin_accuracy"],
        "ff_worst_bin": min(wild),
        "ff_gender_3_9": ff["by_age_bin"].get("3-9", {}).get("gender_accuracy"),
        "utk_gender": utk["gender_accuracy"], "utk_race": utk["race_accuracy"],
        "ff_gender": ff["gender_accuracy"], "ff_race": ff["race_accuracy"], "ff_race7": ff["race7_accuracy"],
        **{f"utk_mae_{side}": s["utkface"]["age_mae"] for side, s in small.items()},
        **{f"utk_bias_40_59_{side}": s["utkface"]["bands"]["40-59"]["age_mean_signed_error"] for side, s in small.items()},
        **{f"utk_bias_60_{side}": s["utkface"]["bands"]["60+"]["age_mean_signed_error"] for side, s in small.items()},
        **{f"ff_bin_{side}": s["fairface"]["age_in_bin_accuracy"] for side, s in small.items()},
    }


def summary_line(arm: dict) -> str:
    f = figures(arm)
    return ", ".join(f"{k} {v if not isinstance(v, float) else round(v, 4)}" for k, v in f.items())


def pct(value) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def markdown(results: dict) -> str:
    arms = results["arms"]
    order = ["shipped"] + [slug(arm["name"]) for arm in ARMS]
    lines = [
        "# Age training levers: results",
        "",
        f"Heads retrained from scratch ({results['epochs']} epochs) or, \"warm\", from the shipped heads ({WARM_EPOCHS} epochs at a learning rate of {WARM_LEARNING_RATE:g}),",
        f"on the features of `{Path(results['model']).name}` (its fine-tuned stages unchanged),",
        f"{results['train_images']:,} training images; validation: UTKFace {results['faces']['utkface']:,} and FairFace {results['faces']['fairface']:,} faces",
        "(15% of each, seed 42), flip-averaged, read out with the prior division and calibrated interval cross-fitted on UTKFace's halves",
        "(\"as shipped\": with the readout chosen on all of UTKFace's validation faces, as a shipped model's sidecar holds it; small faces are read out so too).",
        "Command: `python benchmarks/age_training_experiments.py`. Full size:",
        "",
        "| arm | UTK MAE | UTK MAE, as shipped | UTK worst band bias | UTK band coverage | UTK Asian MAE | FF age bin | FF age bin, as shipped | FF worst bin (3-9 to 60-69) | FF gender 3-9 | UTK gender | UTK race | FF gender | FF race | FF race7 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in order:
        if key not in arms:
            continue
        f = figures(arms[key])
        low, high = f["utk_coverage"]
        lines.append(
            f"| {arms[key]['name']} | {f['utk_mae']:.2f} | {f['utk_mae_as_shipped']:.2f} | {f['utk_worst_bias']:+.2f} | {pct(low)}-{pct(high)} | {f['asian_mae']:.2f} | {pct(f['ff_bin'])} | {pct(f['ff_bin_as_shipped'])} | {pct(f['ff_worst_bin'])} | "
            f"{pct(f['ff_gender_3_9'])} | {pct(f['utk_gender'])} | {pct(f['utk_race'])} | {pct(f['ff_gender'])} | {pct(f['ff_race'])} | {pct(f['ff_race7'])} |"
        )
    sides = results["small_sides"]
    lines += [
        "",
        "Small faces: the validation chips shrunk to a side of " + " and ".join(f"{s} px" for s in sides) + " (faces about two thirds of that wide) and scaled back up, read out as at full size:",
        "",
        "| arm | " + " | ".join(f"UTK MAE {s} | UTK bias 40-59 {s} | UTK bias 60+ {s} | FF age bin {s}" for s in sides) + " |",
        "|---|" + "---|---|---|---|" * len(sides),
    ]
    for key in order:
        if key not in arms:
            continue
        f = figures(arms[key])
        cells = [f"{f[f'utk_mae_{s}']:.2f} | {f[f'utk_bias_40_59_{s}']:+.2f} | {f[f'utk_bias_60_{s}']:+.2f} | {pct(f[f'ff_bin_{s}'])}" for s in sides]
        lines.append(f"| {arms[key]['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Without the readout (raw mean of the distribution, no prior division, no calibration), full size:", "", "| arm | UTK MAE | UTK worst band bias | FF age bin |", "|---|---|---|---|"]
    for key in order:
        if key not in arms:
            continue
        f = figures(arms[key], "raw")
        lines.append(f"| {arms[key]['name']} | {f['utk_mae']:.2f} | {f['utk_worst_bias']:+.2f} | {pct(f['ff_bin'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
