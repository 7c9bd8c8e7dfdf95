"""Metrics a researcher would trust, computed the same way for training and `howold evaluate`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import GENDERS, RACES
from .backbones import DEFAULT_BACKBONE
from .heads import expected_age


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    return matrix


def _summary(age_true, age_pred, gender_true, gender_pred, race_true, race_pred) -> dict:
    errors = np.abs(age_pred - age_true)
    return {
        "n": int(len(age_true)),
        "age_mae": round(float(errors.mean()), 4) if len(errors) else None,
        "age_cs5": round(float((errors <= 5).mean()), 4) if len(errors) else None,
        "gender_accuracy": round(float((gender_pred == gender_true).mean()), 4) if len(errors) else None,
        "race_accuracy": round(float((race_pred == race_true).mean()), 4) if len(errors) else None,
    }


def compute_metrics(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Age MAE and CS@5, gender and race accuracy, confusion matrices, per-race and per-gender."""
    age_true = labels["age"].astype(np.float64)
    age_pred = expected_age(probabilities["age"].astype(np.float64))
    gender_true, race_true = labels["gender"], labels["race"]
    gender_pred = probabilities["gender"].argmax(axis=1)
    race_pred = probabilities["race"].argmax(axis=1)
    report = _summary(age_true, age_pred, gender_true, gender_pred, race_true, race_pred)
    report["by_race"] = {
        name: _summary(*(a[race_true == i] for a in (age_true, age_pred, gender_true, gender_pred, race_true, race_pred)))
        for i, name in enumerate(RACES)
    }
    report["by_gender"] = {
        name: _summary(*(a[gender_true == i] for a in (age_true, age_pred, gender_true, gender_pred, race_true, race_pred)))
        for i, name in enumerate(GENDERS)
    }
    report["gender_confusion"] = {"classes": list(GENDERS), "matrix": confusion_matrix(gender_true, gender_pred, 2).tolist()}
    report["race_confusion"] = {"classes": list(RACES), "matrix": confusion_matrix(race_true, race_pred, 5).tolist()}
    return report


def save_plots(report: dict, probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray], folder: Path, history_csv: Path | None = None) -> list[Path]:
    """Confusion matrices, predicted vs. true age, and training curves when a history is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in ("gender_confusion", "race_confusion"):
        matrix = np.array(report[key]["matrix"])
        classes = report[key]["classes"]
        figure, axis = plt.subplots(figsize=(4 + len(classes) * 0.6, 3.5 + len(classes) * 0.5))
        axis.imshow(matrix, cmap="Blues")
        axis.set_xticks(range(len(classes)), classes, rotation=45)
        axis.set_yticks(range(len(classes)), classes)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center", color="black" if value < matrix.max() / 2 else "white")
        axis.set_title(key.replace("_", " "))
        figure.tight_layout()
        written.append(folder / f"{key}.png")
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)

    figure, axis = plt.subplots(figsize=(5, 5))
    predicted = expected_age(probabilities["age"].astype(np.float64))
    axis.scatter(labels["age"], predicted, s=3, alpha=0.3)
    axis.plot([0, 100], [0, 100], color="red", linewidth=1)
    axis.set_xlabel("true age")
    axis.set_ylabel("predicted age")
    axis.set_title(f"age, MAE {report['age_mae']:.2f}")
    figure.tight_layout()
    written.append(folder / "age_scatter.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    if history_csv is not None and history_csv.is_file():
        import csv

        rows = list(csv.DictReader(history_csv.open()))
        if rows:
            figure, axis = plt.subplots(figsize=(6, 4))
            epochs = [int(r["epoch"]) for r in rows]
            for column in ("loss", "val_loss"):
                if column in rows[0]:
                    axis.plot(epochs, [float(r[column]) for r in rows], label=column)
            axis.set_xlabel("epoch")
            axis.legend()
            figure.tight_layout()
            written.append(folder / "training_curves.png")
            figure.savefig(written[-1], dpi=100)
            plt.close(figure)
    return written


def evaluate_folder(
    data_dir: Path,
    output: Path,
    backbone: str = DEFAULT_BACKBONE,
    heads: str | Path | None = None,
    plots_dir: Path | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate heads on a UTKFace-named folder of face crops; writes the JSON report and plots.

    Crops are aligned inside the whole image (no detection); plain and mirrored views are averaged.
    """
    import json

    from .backbones import create_backbone
    from .data import load_dataset
    from .features import AugmentConfig, extract_activations
    from .heads import default_heads_path, load_heads, predict_views

    dataset = load_dataset(data_dir, limit=limit)
    network = create_backbone(backbone)
    heads_path = Path(heads) if heads else default_heads_path(network)
    trained = load_heads(heads_path)
    trained.check_backbone(network, heads_path)
    features = extract_activations(network, dataset, (trained.boundary,), AugmentConfig(views=2), progress=progress)[trained.boundary]
    probabilities = predict_views(trained.model, features)
    labels = dataset.labels()
    report = compute_metrics(probabilities, labels)
    report["data"] = str(data_dir)
    report["skipped_names"] = dataset.skipped
    report["backbone"] = network.name
    report["heads"] = str(heads_path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report["plots"] = [str(p) for p in save_plots(report, probabilities, labels, plots_dir or output.parent / (output.stem + "_plots"))]
    output.write_text(json.dumps(report, indent=2))
    return report
