"""Pictures of an evaluation: confusion matrices, predicted against true age, the mean
predicted age with its interval by true age, and training curves. Kept apart from the metrics so
that evaluation's numbers never wait on matplotlib."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import AGE_BINS
from .readout import AgeReadout, age_percentiles


def age_curve(age_probabilities: np.ndarray, labels: dict[str, np.ndarray], width: int = 5, min_faces: int = 1, readout: AgeReadout | None = None) -> dict:
    """Mean predicted age and mean 10-90% interval by true age: per `width`-year group of exact
    ages ("kind": "ages", x: the group's mean true age), else per FairFace bin ("kind": "bins",
    x: the bin's middle). Groups of fewer than `min_faces` faces are left out. The distributions
    are read out already; `readout` says only which point is the age."""
    ages = np.asarray(labels["age"])
    exact = ages >= 0
    predicted = (readout or AgeReadout()).point_of(age_probabilities)
    interval = age_percentiles(age_probabilities)
    curve: dict = {"kind": "ages" if exact.any() else "bins", "x": [], "n": [], "mean": [], "low": [], "high": []}
    if exact.any():
        groups = [(exact & (ages // width == g), None) for g in range(0, 100 // width + 1)]
    else:
        bins = np.asarray(labels["age_bin"])
        groups = [(bins == i, (low + min(high, 80) + 1) / 2) for i, (low, high) in enumerate(AGE_BINS)]
    for mask, middle in groups:
        if mask.sum() < max(min_faces, 1):
            continue
        curve["x"].append(round(float(ages[mask].mean() if middle is None else middle), 2))
        curve["n"].append(int(mask.sum()))
        for key, values in (("mean", predicted), ("low", interval[:, 0]), ("high", interval[:, 1])):
            curve[key].append(round(float(values[mask].mean()), 2))
    return curve


def save_plots(
    report: dict, probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray], folder: Path, history_csv: Path | None = None, readout: AgeReadout | None = None
) -> list[Path]:
    """Confusion matrices, predicted vs. true age, mean predicted age and interval by true age
    (age_curve), and training curves when a history is given."""
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
    readout = readout or AgeReadout()
    age_probabilities = readout.apply(probabilities["age"].astype(np.float64))
    if exact.any():
        figure, axis = plt.subplots(figsize=(5, 5))
        predicted = readout.point_of(age_probabilities)
        axis.scatter(np.asarray(labels["age"])[exact], predicted[exact], s=3, alpha=0.3)
        axis.plot([0, 100], [0, 100], color="red", linewidth=1)
        axis.set_xlabel("true age")
        axis.set_ylabel("predicted age")
        axis.set_title(f"age, MAE {report['age_mae']:.2f}")
        figure.tight_layout()
        written.append(folder / "age_scatter.png")
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    curve = age_curve(age_probabilities, labels, readout=readout)
    if curve["x"]:
        figure, axis = plt.subplots(figsize=(5.5, 5))
        axis.fill_between(curve["x"], curve["low"], curve["high"], alpha=0.25, label="mean 10-90% interval")
        axis.plot(curve["x"], curve["mean"], marker="o", markersize=3, label="mean predicted age")
        if curve["kind"] == "bins":  # each bin as a square on the diagonal: inside it, the age is in the bin
            from matplotlib.patches import Rectangle

            for low, high in AGE_BINS:
                axis.add_patch(Rectangle((low, low), high + 1 - low, high + 1 - low, fill=False, edgecolor="grey", linewidth=0.6))
            axis.plot([], [], color="grey", linewidth=0.6, label="the true bins")
        axis.plot([0, 100], [0, 100], color="red", linewidth=1, label="true age")
        axis.set_xlabel("true age" + (" (bin middle)" if curve["kind"] == "bins" else ""))
        axis.set_ylabel("predicted age")
        axis.set_xlim(0, 100)
        axis.set_ylim(0, 100)
        axis.set_title("mean predicted age and its interval by true age")
        axis.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        written.append(folder / "age_by_true_age.png")
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
