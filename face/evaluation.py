"""Metrics a researcher would trust, computed the same way for training and `howold evaluate`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import AGE_BIN_NAMES, AGE_BINS, FAIRFACE_RACES, GENDERS, RACE_SETS, RACES, age_bin_of
from .backbones import DEFAULT_BACKBONE
from .detectors import DEFAULT_DETECTOR
from .heads import expected_age, race5_probabilities


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    return matrix


def _rate(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if len(hits) else None


def _summary(true: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict:
    """Headline metrics of some faces; each over the faces whose label says (age MAE: exact ages;
    7-way race: faces whose label names one of FairFace's races)."""
    exact = true["age"] >= 0
    errors = np.abs(predicted["age"][exact] - true["age"][exact])
    summary = {
        "n": int(len(true["gender"])),
        "age_mae": round(float(errors.mean()), 4) if len(errors) else None,
        "age_cs5": _rate(errors <= 5),
        "age_bin_accuracy": _rate(predicted["age_bin"] == true["age_bin"]),
        "gender_accuracy": _rate(predicted["gender"] == true["gender"]),
        "race_accuracy": _rate(predicted["race"] == true["race"]),
    }
    if "race7" in predicted:
        known = true["race7"] >= 0
        summary["race7_accuracy"] = _rate(predicted["race7"][known] == true["race7"][known])
    return summary


def compute_metrics(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Age MAE and CS@5 (exact ages), age-bin accuracy (FairFace's 9 bins), gender, 5-way race
    and, for heads with FairFace's 7 races, 7-way race; confusion matrices; the same by race,
    gender and age bin; and the under-20s' age MAE and mean signed error."""
    age_probabilities = probabilities["age"].astype(np.float64)
    race = np.asarray(probabilities["race"], np.float64)
    true = {name: np.asarray(labels.get(name, np.full(len(labels["gender"]), -1)), np.int64) for name in ("age", "age_bin", "gender", "race", "race7")}
    if "age_bin" not in labels:
        true["age_bin"] = np.array([age_bin_of(int(a)) for a in true["age"]], np.int64)
    if "race7" not in labels:
        true["race7"] = np.array([RACE_SETS[int(r)][0] if len(RACE_SETS[int(r)]) == 1 else -1 for r in true["race"]], np.int64)
    predicted = {
        "age": expected_age(age_probabilities),
        "age_bin": np.stack([age_probabilities[:, low : high + 1].sum(axis=1) for low, high in AGE_BINS], axis=1).argmax(axis=1),
        "gender": probabilities["gender"].argmax(axis=1),
        "race": race5_probabilities(race).argmax(axis=1),
    }
    seven = race.shape[1] == len(FAIRFACE_RACES)
    if seven:
        predicted["race7"] = race.argmax(axis=1)

    def where(mask: np.ndarray) -> dict:
        return _summary({k: v[mask] for k, v in true.items()}, {k: v[mask] for k, v in predicted.items()})

    report = _summary(true, predicted)
    report["by_race"] = {name: where(true["race"] == i) for i, name in enumerate(RACES)}
    if seven:
        report["by_race7"] = {name: where(true["race7"] == i) for i, name in enumerate(FAIRFACE_RACES)}
    report["by_gender"] = {name: where(true["gender"] == i) for i, name in enumerate(GENDERS)}
    report["by_age_bin"] = {name: where(true["age_bin"] == i) for i, name in enumerate(AGE_BIN_NAMES)}
    young = (true["age"] >= 0) & (true["age"] < 20)
    signed = predicted["age"][young] - true["age"][young]
    report["under_20"] = {
        "n": int(young.sum()),
        "age_mae": round(float(np.abs(signed).mean()), 4) if len(signed) else None,
        "age_mean_signed_error": round(float(signed.mean()), 4) if len(signed) else None,
    }
    report["gender_confusion"] = {"classes": list(GENDERS), "matrix": confusion_matrix(true["gender"], predicted["gender"], 2).tolist()}
    report["race_confusion"] = {"classes": list(RACES), "matrix": confusion_matrix(true["race"], predicted["race"], 5).tolist()}
    if seven:
        known = true["race7"] >= 0
        report["race7_confusion"] = {"classes": list(FAIRFACE_RACES), "matrix": confusion_matrix(true["race7"][known], predicted["race7"][known], 7).tolist()}
    if (true["age_bin"] >= 0).all():
        report["age_bin_confusion"] = {"classes": list(AGE_BIN_NAMES), "matrix": confusion_matrix(true["age_bin"], predicted["age_bin"], len(AGE_BINS)).tolist()}
    return report


def save_plots(report: dict, probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray], folder: Path, history_csv: Path | None = None) -> list[Path]:
    """Confusion matrices, predicted vs. true age, and training curves when a history is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key in ("gender_confusion", "race_confusion", "race7_confusion", "age_bin_confusion"):
        if key not in report:
            continue
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

    exact = np.asarray(labels["age"]) >= 0
    if exact.any():  # FairFace has age bins only, plotted as their confusion matrix
        figure, axis = plt.subplots(figsize=(5, 5))
        predicted = expected_age(probabilities["age"].astype(np.float64))
        axis.scatter(np.asarray(labels["age"])[exact], predicted[exact], s=3, alpha=0.3)
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


#: the detector that finds faces in loose crops (FairFace's) before alignment
DEFAULT_CROP_DETECTOR = DEFAULT_DETECTOR


def box_counts(dataset, detector: str, cache_root: Path | None = None) -> dict:
    """How many faces the detector found; the rest were aligned in the crop minus its margin."""
    from .features import dataset_boxes

    found = dataset_boxes(dataset, detector, cache_root, progress=False)[1]
    return {"images": len(dataset), "detector": detector if dataset.loose_crops else None, "detected": int(found.sum()), "margin_fallback": int((~found).sum())}


def evaluate_folder(
    data_dir: Path,
    output: Path,
    backbone: str = DEFAULT_BACKBONE,
    heads: str | Path | None = None,
    plots_dir: Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    detector: str = DEFAULT_CROP_DETECTOR,
) -> dict:
    """Evaluate heads on a labelled folder; writes the JSON report and plots.

    `data_dir` is a UTKFace-named folder of aligned crops (aligned inside the whole image),
    or a FairFace-layout folder or CSV, or either as `NAME=DIR` (see data.parse_data_spec);
    FairFace's loose crops are detected with `detector` first. Plain and mirrored views are averaged.
    """
    import json

    from .backbones import create_backbone
    from .data import load_named, parse_data_spec
    from .features import AugmentConfig, extract_activations
    from .heads import default_heads_path, load_heads, predict_views

    kind, root = parse_data_spec(data_dir)
    dataset = load_named(kind, root, limit=limit)
    network = create_backbone(backbone)
    heads_path = Path(heads) if heads else default_heads_path(network)
    trained = load_heads(heads_path)
    trained.check_backbone(network, heads_path)
    features = extract_activations(network, dataset, (trained.boundary,), AugmentConfig(views=2), progress=progress, detector=detector)[trained.boundary]
    probabilities = predict_views(trained.model, features)
    labels = dataset.labels()
    report = compute_metrics(probabilities, labels)
    report["data"] = str(data_dir)
    report["dataset"] = kind
    report["faces"] = box_counts(dataset, detector)
    report["skipped_names"] = dataset.skipped
    report["backbone"] = network.name
    report["heads"] = str(heads_path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report["plots"] = [str(p) for p in save_plots(report, probabilities, labels, plots_dir or output.parent / (output.stem + "_plots"))]
    output.write_text(json.dumps(report, indent=2))
    return report
