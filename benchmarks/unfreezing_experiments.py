"""What unfreezing buys: frozen heads vs. the last stage vs. the last two, with and without
augmentation, plus Levi-Hassner trained from scratch, on the UTKFace train/validation split.

    python benchmarks/unfreezing_experiments.py --data ../shared/data/utkface

Rows (validation: the 15% split of `howold train`, flip test-time augmentation):
  frozen            heads on the frozen dlib ResNet's features (howold train)
  last stage        + level 5 and the fc layer fine-tuned, warm-started from the frozen heads
  last two stages   + level 4 as well, warm-started from the row above (progressive)
  Levi-Hassner      the seeds' CNN at 64x64, trained end to end from random weights
"without augmentation" uses the plain view only and no mixup; "with" draws one of four cached
views per image (plain, mirrored, two with random shift, scale, flip and erasing) and mixes up
pairs. Every run logs to logs/<name>/ (CSV and TensorBoard) and resumes if interrupted; a run
whose model file exists is not repeated. Writes the table as JSON and Markdown.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

from face.features import AugmentConfig
from face.model import load_heads
from face.training import TrainConfig, train
from face.unfreezing import fine_tune

METRICS = ("age_mae", "age_cs5", "gender_accuracy", "race_accuracy")


def epoch_history(run_dir: Path) -> list[dict[str, float]]:
    """The run's per-epoch CSV log as numbers, kept in the results so the curves outlive logs/."""
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    return [{key: round(float(value), 5) for key, value in row.items() if value} for row in csv.DictReader(path.open())]


def frozen_row(config: TrainConfig, label: str) -> dict:
    if not Path(config.output).exists():
        train(config)
    metadata = load_heads(config.output).metadata
    history = epoch_history(config.run_dir())
    fit = metadata["training"]["fit_seconds"]
    return {"model": "frozen", "augmentation": label, **{k: metadata["validation"][k] for k in METRICS}, "epochs": len(history), "fit_seconds": fit, "seconds_per_epoch": round(fit / max(len(history), 1), 1), "trainable_backbone_parameters": 0, "log": str(config.run_dir()), "history": history}


def unfreeze_rows(config: TrainConfig, label: str, names: dict[int, str]) -> list[dict]:
    if Path(config.output).exists():
        phases = load_heads(config.output).metadata["training"]["phases"]
    else:
        phases = fine_tune(config)["phases"]
    return [
        {
            "model": names[phase["unfrozen_stages"]],
            "augmentation": label,
            **{k: phase[k] for k in METRICS},
            "epochs": phase["epochs"],
            "fit_seconds": phase["fit_seconds"],
            "seconds_per_epoch": phase["seconds_per_epoch"],
            "trainable_backbone_parameters": phase["trainable_backbone_parameters"],
            "boundary": phase["boundary"],
            "cache_mb": round(phase["cache_bytes"] / 2**20, 1),
            "log": str(config.run_dir() / f"unfreeze-{phase['unfrozen_stages']}"),
            "history": epoch_history(config.run_dir() / f"unfreeze-{phase['unfrozen_stages']}"),
        }
        for phase in phases
    ]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | augmentation | age MAE | CS@5 | gender | race | epochs | s/epoch | fit s | trained backbone params |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['augmentation']} | {row['age_mae']:.2f} | {row['age_cs5']:.1%} | {row['gender_accuracy']:.2%} | "
            f"{row['race_accuracy']:.2%} | {row['epochs']} | {row['seconds_per_epoch']} | {row['fit_seconds']:.0f} | {row['trainable_backbone_parameters']:,} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/utkface")
    parser.add_argument("--logs", default="logs/experiments")
    parser.add_argument("--heads-epochs", type=int, default=30)
    parser.add_argument("--unfreeze-epochs", type=int, default=5)
    parser.add_argument("--scratch-epochs", type=int, default=12)
    parser.add_argument("--limit", type=int, default=None, help="first N images only (a quick check)")
    parser.add_argument("--skip-scratch", action="store_true")
    parser.add_argument("--output", default="notebooks/unfreezing_results.json")
    args = parser.parse_args()

    logs = Path(args.logs)
    base = TrainConfig(data_dir=Path(args.data), logs_dir=logs, limit=args.limit, epochs=args.heads_epochs, unfreeze_epochs=args.unfreeze_epochs, augment=AugmentConfig(views=4))
    settings = {"without": {"train_views": 1, "mixup_alpha": 0.0}, "with": {"train_views": 4, "mixup_alpha": 0.2}}
    names = {1: "last stage", 2: "last two stages"}
    rows: list[dict] = []
    started = time.time()
    for label, options in settings.items():
        heads = replace(base, run_name=f"frozen-{label}", output=logs / f"frozen-{label}.keras", **options)
        rows.append(frozen_row(heads, label))
        unfrozen = replace(base, run_name=f"unfreeze-{label}", output=logs / f"unfreeze-{label}.keras", unfreeze=("1", "2"), init_heads=heads.output, **options)
        rows.extend(unfreeze_rows(unfrozen, label, names))
        print(markdown(rows), flush=True)
    if not args.skip_scratch:
        scratch = replace(
            base, backbone="levi-hassner", run_name="levi-hassner-with", output=logs / "levi-hassner-with.keras", unfreeze=("all",),
            unfreeze_epochs=args.scratch_epochs, unfreeze_learning_rate=1e-3, **settings["with"],
        )
        rows.extend(unfreeze_rows(scratch, "with", {5: "Levi-Hassner from scratch (64x64)"}))
    rows = sorted(rows, key=lambda row: (row["augmentation"], row["model"].startswith("Levi"), row["trainable_backbone_parameters"]))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"rows": rows, "seconds": round(time.time() - started), "args": vars(args)}, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
