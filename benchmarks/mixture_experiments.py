"""What FairFace adds: UTKFace alone vs. UTKFace + FairFace, frozen heads and the last two
stages unfrozen, each evaluated on both validation parts.

    python benchmarks/mixture_experiments.py --utkface ../shared/data/utkface --fairface ../shared/data/fairface

Rows (validation: each dataset's own 15% split, seed 42, flip test-time augmentation; --plain: none):
  shipped           today's default model (UTKFace's 5 races), for reference
  frozen            7-race heads on the frozen dlib ResNet's features (howold train)
  last two stages   level 4, level 5 and fc fine-tuned with the heads by progressive unfreezing
                    (the last stage, then the last two), warm-started from the frozen heads
  last three stages with --deeper, the mixture only: level 3 unfrozen too, a third phase that
                    continues from the last-two-stages run's finished phases
Every row trains with augmentation (one of four cached views per image, mixup 0.2). A model
trained on UTKFace alone is still scored on FairFace's validation part: its caches are the
mixture's. Every run logs to logs/<name>/ and resumes if interrupted; a run whose model file
exists is not repeated. Writes the table as JSON and Markdown, with each run's history, cache
sizes on disk, face-detection counts and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

from face.backbones import create_backbone
from face.evaluation import box_counts, compute_metrics
from face.features import AugmentConfig, cache_bytes, cache_folder
from face.model import load_heads
from face.model_files import default_heads_path
from face.training import TrainConfig, headline, load_parts, mixture_activations, predict_rows, train
from face.unfreezing import fine_tune

from unfreezing_experiments import epoch_history  # noqa: E402  (benchmarks/ is the script's folder)

DATASETS = ("utkface", "fairface")


def reuse_phases(source: TrainConfig, target: TrainConfig) -> None:
    """Copy the shallower run's finished phase folders into the deeper run's: fine_tune takes a
    phase with its done.json from the best weights instead of training it again."""
    for phase in sorted(source.run_dir().glob("unfreeze-*")):
        destination = target.run_dir() / phase.name
        if (phase / "done.json").exists() and not destination.exists():
            shutil.copytree(phase, destination)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def score(heads_path: Path, parts, backbone, config: TrainConfig) -> dict:
    """Headline metrics (and groups) of a model on each dataset's validation part."""
    trained = load_heads(heads_path)
    values = mixture_activations(backbone, parts, (trained.boundary,), config)[trained.boundary]
    scores = {}
    for part in parts:
        report = compute_metrics(predict_rows(trained.model, values, part.validation_rows, config.validation_views), part.validation.labels())
        scores[part.kind] = {**headline(report), **{key: report[key] for key in ("by_race", "by_race7", "by_gender", "by_age_bin") if key in report}}
    return scores


def markdown(rows: list[dict]) -> str:
    def cell(value, style):
        return "—" if value is None else format(value, style)

    lines = [
        "| training data | model | UTKFace age MAE | gender | race (5) | under-20 MAE / signed | FairFace age bin | gender | race (5) | race (7) | epochs | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        utk, ff = row["scores"]["utkface"], row["scores"]["fairface"]
        young = utk.get("under_20", {})
        lines.append(
            f"| {row['data']} | {row['model']} | {cell(utk['age_mae'], '.2f')} | {cell(utk['gender_accuracy'], '.2%')} | {cell(utk['race_accuracy'], '.2%')} | "
            f"{cell(young.get('age_mae'), '.2f')} / {cell(young.get('age_mean_signed_error'), '+.2f')} | {cell(ff['age_bin_accuracy'], '.2%')} | "
            f"{cell(ff['gender_accuracy'], '.2%')} | {cell(ff['race_accuracy'], '.2%')} | {cell(ff.get('race7_accuracy'), '.2%')} | {row.get('epochs', '—')} | {row.get('seconds_per_epoch', '—')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utkface", default="../shared/data/utkface")
    parser.add_argument("--fairface", default="../shared/data/fairface")
    parser.add_argument("--detector", default="yunet", help="face detector for FairFace's loose crops")
    parser.add_argument("--logs", default="logs/mixture")
    parser.add_argument("--heads-epochs", type=int, default=30)
    parser.add_argument("--unfreeze-epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="first N images of each dataset only (a quick check)")
    parser.add_argument("--fairface-limit", type=int, default=None, help="first N of FairFace's images only (CPU time)")
    parser.add_argument("--deeper", action="store_true", help="also unfreeze the third-last stage (level 3) for the mixture")
    parser.add_argument("--only", choices=("utkface", "mixture"), default=None, help="run one training set's rows only")
    parser.add_argument("--train-only", action="store_true", help="train the runs (resumable), score nothing")
    parser.add_argument("--score-only", action="store_true", help="train nothing: score the runs whose models exist, list the others as not run")
    parser.add_argument("--plain", action="store_true", help="score the plain view only, as Analyzer() answers by default (no flip averaging)")
    parser.add_argument("--output", default="notebooks/mixture_results.json")
    args = parser.parse_args()

    logs = Path(args.logs)
    specs = {"utkface": (f"utkface={args.utkface}",), "mixture": (f"utkface={args.utkface}", f"fairface={args.fairface}")}
    base = TrainConfig(
        datasets=specs["mixture"], detector=args.detector, logs_dir=logs,
        limit={"utkface": args.limit, "fairface": args.fairface_limit or args.limit}, epochs=args.heads_epochs,
        unfreeze_epochs=args.unfreeze_epochs, augment=AugmentConfig(views=4), train_views=4, mixup_alpha=0.2,
        validation_views=(0,) if args.plain else (0, 1),
    )
    started = time.time()
    labels = {"utkface": "UTKFace", "mixture": "UTKFace + FairFace"}
    names = ("utkface", "mixture") if args.only is None else (args.only,)
    runs, not_run = {}, []
    for name in names:  # train first: a training set's runs touch only its own datasets' caches
        heads = replace(base, datasets=specs[name], run_name=f"{name}-frozen", output=logs / f"{name}-frozen.keras")
        if not Path(heads.output).exists() and not args.score_only:
            train(heads)
        unfrozen = replace(base, datasets=specs[name], run_name=f"{name}-unfreeze", output=logs / f"{name}-unfreeze.keras", unfreeze=("1", "2"), init_heads=heads.output)
        if not Path(unfrozen.output).exists() and not args.score_only:
            fine_tune(unfrozen)
        models = {"frozen": heads, "last two stages": unfrozen}
        if args.deeper and name == "mixture":
            deeper = replace(unfrozen, run_name=f"{name}-unfreeze3", output=logs / f"{name}-unfreeze3.keras", unfreeze=("1", "2", "3"))
            if not Path(deeper.output).exists() and not args.score_only:
                reuse_phases(unfrozen, deeper)
                fine_tune(deeper)
            models["last three stages"] = deeper
        runs[name] = (models, None if args.score_only else peak_rss_mb())  # nothing trained: no training peak
        not_run += [str(config.output) for config in models.values() if not Path(config.output).exists()]
    if args.train_only:
        return
    backbone = create_backbone(base.backbone)
    boundaries = (None, backbone.boundary(1), backbone.boundary(2)) + ((backbone.boundary(3),) if args.deeper else ())
    parts = load_parts(base)  # the mixture's parts: every model is scored on both validation parts
    mixture_activations(backbone, parts, boundaries, base)  # one pass fills every cache
    caches = {
        part.kind: {str(layer): round(cache_bytes(cache_folder(backbone, part.dataset, base.augment, layer, base.cache_root, base.detector)) / 2**20, 1) for layer in boundaries}
        for part in parts
    }
    shipped = default_heads_path(backbone)
    rows: list[dict] = [{"data": "UTKFace (shipped)", "model": "last two stages, 12 epochs a phase, 5 races", "heads": str(shipped), "scores": score(shipped, parts, backbone, base)}]
    for name, (models, rss) in runs.items():
        heads = models["frozen"]
        if not Path(heads.output).exists():
            continue
        metadata = load_heads(heads.output).metadata
        history = epoch_history(heads.run_dir())
        fit = metadata["training"]["fit_seconds"]
        rows.append({
            "data": labels[name], "model": "frozen", "heads": str(heads.output), "epochs": len(history), "fit_seconds": fit,
            "seconds_per_epoch": round(fit / max(len(history), 1), 1), "history": history, "scores": score(Path(heads.output), parts, backbone, base),
        })
        for model, unfrozen in models.items():
            if model == "frozen" or not Path(unfrozen.output).exists():
                continue
            phases = load_heads(unfrozen.output).metadata["training"]["phases"]
            last = phases[-1]
            rows.append({
                "data": labels[name], "model": model, "heads": str(unfrozen.output), "epochs": last["epochs"], "fit_seconds": last["fit_seconds"],
                "seconds_per_epoch": last["seconds_per_epoch"], "phases": phases, "peak_rss_mb_after_training": rss,
                "history": epoch_history(unfrozen.run_dir() / f"unfreeze-{last['unfrozen_stages']}"),
                "scores": score(Path(unfrozen.output), parts, backbone, base),
            })
        print(markdown(rows), flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "rows": rows,
        "seconds": round(time.time() - started),
        "peak_rss_mb": peak_rss_mb(),
        "cache_mb": caches,
        "faces": {part.kind: box_counts(part.dataset, base.detector) for part in parts},
        "splits": {part.kind: {"train": len(part.train), "validation": len(part.validation)} for part in parts},
        "not_run": not_run,
        "args": vars(args),
    }
    output.write_text(json.dumps(result, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    print(f"peak RSS {result['peak_rss_mb']} MB; caches (MB) {caches}; faces {result['faces']}")


if __name__ == "__main__":
    main()
