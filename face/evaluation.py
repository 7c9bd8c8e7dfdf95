"""Metrics a researcher would trust, computed the same way for training and `howold evaluate`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import AGE_BIN_NAMES, AGE_BINS, FAIRFACE_RACES, GENDERS, RACE_SETS, RACES, age_bin_of
from .backbones import DEFAULT_BACKBONE
from .detectors import DEFAULT_DETECTOR
from .evaluation_plots import save_plots
from .readout import AgeReadout, age_percentiles, race5_probabilities


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    return matrix


def _rate(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 4) if len(hits) else None


#: confidence bins of the gender calibration table: [0.5, 0.6), ..., [0.9, 1.0]
GENDER_CONFIDENCE_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def gender_calibration(confidence: np.ndarray, correct: np.ndarray) -> list[dict]:
    """Confidence against accuracy: per bin of the reported gender_confidence, the faces in it,
    their mean confidence and the share whose gender was right. An honest confidence has the two
    close in every bin."""
    table = []
    for index, (low, high) in enumerate(zip(GENDER_CONFIDENCE_BINS[:-1], GENDER_CONFIDENCE_BINS[1:])):
        last = index == len(GENDER_CONFIDENCE_BINS) - 2
        inside = (confidence >= low) & ((confidence <= high) if last else (confidence < high))
        table.append(
            {
                "confidence": f"{low:.1f}-{high:.1f}",
                "n": int(inside.sum()),
                "mean_confidence": _mean(confidence[inside]),
                "accuracy": _rate(correct[inside]),
            }
        )
    return table


def _mean(values: np.ndarray) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def _summary(true: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict:
    """Headline metrics of some faces; each over the faces whose label says (age MAE, mean
    signed error: exact ages; 7-way race: faces whose label names one of FairFace's races).

    interval_coverage: the share of exact true ages inside the 10-90% interval; for faces
    with only an age bin (FairFace), the share whose bin the interval overlaps (a bin 10-19
    holds ages from 10 up to, not including, 20). age_in_bin_accuracy: the share whose
    reported age lies in the true bin (age_bin_accuracy: the bin holding most probability).
    """
    exact = true["age"] >= 0
    signed = predicted["age"][exact] - true["age"][exact]
    errors = np.abs(signed)
    low, high = predicted["age_low"], predicted["age_high"]
    bins = np.asarray(AGE_BINS)[np.clip(true["age_bin"], 0, None)]
    covered = np.where(exact, (low <= true["age"]) & (true["age"] <= high), (low < bins[:, 1] + 1) & (high >= bins[:, 0]))
    in_bin = (predicted["age"] >= bins[:, 0]) & (predicted["age"] < bins[:, 1] + 1)
    known_bin = true["age_bin"] >= 0
    correct_gender = predicted["gender"] == true["gender"]
    summary = {
        "n": int(len(true["gender"])),
        "age_mae": _mean(errors),
        "age_mean_signed_error": _mean(signed),
        "age_cs5": _rate(errors <= 5),
        "interval_coverage": _rate(covered[exact | known_bin]),
        "interval_width": _mean((high - low)[exact | known_bin]),
        "age_bin_accuracy": _rate(predicted["age_bin"] == true["age_bin"]),
        "age_in_bin_accuracy": _rate(in_bin[known_bin]),
        "gender_accuracy": _rate(correct_gender),
        "gender_confidence_mean": _mean(predicted["gender_confidence"]),
        "race_accuracy": _rate(predicted["race"] == true["race"]),
    }
    if "race7" in predicted:
        known = true["race7"] >= 0
        summary["race7_accuracy"] = _rate(predicted["race7"][known] == true["race7"][known])
    summary["gender_calibration"] = gender_calibration(predicted["gender_confidence"], correct_gender)
    return summary


def compute_metrics(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray], readout: AgeReadout | None = None) -> dict:
    """Every figure of `howold evaluate` and of the training reports.

    Overall, and the same for each group in by_race (UTKFace's 5), by_race7 (FairFace's 7,
    7-race heads only), by_gender and by_age_bin (FairFace's 9 bins: 0-2, 3-9, 10-19, ...,
    "more than 70"), each group a dict with these keys (None where its faces lack the label):

      n                       faces
      age_mae                 mean |age - true age| (exact ages)
      age_mean_signed_error   mean (age - true age): the bias, > 0 reads older (exact ages)
      age_cs5                 share within 5 years (exact ages)
      interval_coverage       share of true ages inside the 10-90% age_interval; with only a
                              bin, share whose bin the interval overlaps (about 0.8 is honest)
      interval_width          mean width of the interval, years
      age_bin_accuracy        share whose most probable bin is the true bin
      age_in_bin_accuracy     share whose reported age lies in the true bin
      gender_accuracy         share of right genders
      gender_confidence_mean  mean reported gender_confidence (honest: close to the accuracy)
      race_accuracy           5-way race; race7_accuracy: 7-way (faces with a 7-way label)
      gender_calibration      [{confidence: "0.5-0.6", n, mean_confidence, accuracy}, ...]

    The age figures use the distribution as `readout` reads it (readout.AgeReadout; None: as the
    heads give it), as Analyzer's answers do. Also: confusion matrices, and under_20 (MAE and
    mean signed error of exact ages below 20).
    """
    readout = readout or AgeReadout()
    age_probabilities = readout.apply(probabilities["age"].astype(np.float64))
    race = np.asarray(probabilities["race"], np.float64)
    true = {name: np.asarray(labels.get(name, np.full(len(labels["gender"]), -1)), np.int64) for name in ("age", "age_bin", "gender", "race", "race7")}
    if "age_bin" not in labels:
        true["age_bin"] = np.array([age_bin_of(int(a)) for a in true["age"]], np.int64)
    if "race7" not in labels:
        true["race7"] = np.array([RACE_SETS[int(r)][0] if len(RACE_SETS[int(r)]) == 1 else -1 for r in true["race"]], np.int64)
    interval = age_percentiles(age_probabilities)
    gender = np.asarray(probabilities["gender"], np.float64)
    predicted = {
        "age": readout.point_of(age_probabilities),
        "age_low": interval[:, 0],
        "age_high": interval[:, 1],
        "age_bin": np.stack([age_probabilities[:, low : high + 1].sum(axis=1) for low, high in AGE_BINS], axis=1).argmax(axis=1),
        "gender": gender.argmax(axis=1),
        "gender_confidence": gender.max(axis=1),
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


#: the detector that finds faces in loose crops (FairFace's) before alignment
DEFAULT_CROP_DETECTOR = DEFAULT_DETECTOR


def box_counts(dataset, detector: str, cache_root: Path | None = None) -> dict:
    """How many faces the detector found; the rest were aligned in the crop minus its margin."""
    from .features import dataset_boxes

    found = dataset_boxes(dataset, detector, cache_root, progress=False)[1]
    return {"images": len(dataset), "detector": detector if dataset.loose_crops else None, "detected": int(found.sum()), "margin_fallback": int((~found).sum())}


#: which faces of a folder `howold evaluate --split` scores: all, or one side of the training split
HEADLINE = ("n", "age_mae", "age_cs5", "age_bin_accuracy", "gender_accuracy", "race_accuracy", "race7_accuracy")


def headline(report: dict) -> dict:
    """A report's headline metrics, plus the under-20s' age error where it has exact ages."""
    summary = {k: report[k] for k in HEADLINE if k in report}
    if report.get("under_20", {}).get("n"):
        summary["under_20"] = report["under_20"]
    if "faces" in report:
        summary["faces"] = report["faces"]
    return summary


def printed_summary(report: dict) -> dict:
    """What `howold evaluate` prints of a report: the headline and calibration figures
    ("overall"), then each grouping without its calibration table or empty figures."""
    groups = {key: {name: {k: v for k, v in group.items() if v is not None and k != "gender_calibration"} for name, group in report[key].items()} for key in ("by_race", "by_race7", "by_gender", "by_age_bin") if key in report}
    overall = {**headline(report), **{k: report[k] for k in ("age_mean_signed_error", "interval_coverage", "gender_confidence_mean", "gender_calibration")}}
    return {"overall": overall, **groups}


SPLITS = ("all", "validation", "train")


def evaluate_folder(
    data_dir: Path,
    output: Path,
    backbone: str | None = None,
    heads: str | Path | None = None,
    plots_dir: Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    detector: str = DEFAULT_CROP_DETECTOR,
    split: str = "all",
    age_readout: str = "default",
    chip_side: int | None = None,
    store_stats: bool = False,
) -> dict:
    """Evaluate heads on a labelled folder; writes the JSON report (compute_metrics' keys) and plots.

    `backbone`: default, the one the heads' sidecar names (the default backbone's shipped
    model without `heads`).
    `data_dir` is a UTKFace-named folder of aligned crops (aligned inside the whole image),
    or a FairFace-layout folder or CSV, or either as `NAME=DIR` (see data.parse_data_spec);
    FairFace's loose crops are detected with `detector` first. Plain and mirrored views are averaged.
    `split`: "validation" or "train" scores that side of the split training makes (15%, seed 42),
    so that a model is judged on faces it never learnt from. `age_readout`: the model's
    readout to apply (readout.AgeReadout.from_metadata: "default", "raw", or one it lists).
    `chip_side`: every aligned chip is shrunk to this side and scaled back up first, to measure
    the model on faces as small as group photos give (the face is about two thirds of the side).
    `store_stats`: write the statistics `howold report` corrects shares with
    (quantification_stats) into the model's sidecar, under this dataset's name; only from the
    validation side, full-size chips and the default readout, as analyses read faces.
    """
    import json

    from .backbones import create_backbone
    from .data import load_named, parse_data_spec, split_dataset
    from .errors import ConfigError
    from .features import AugmentConfig, extract_activations
    from .model import load_heads, predict_views
    from .model_files import default_heads_path, store_quantification_stats

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if store_stats and (split != "validation" or chip_side is not None or age_readout != "default" or limit is not None):
        raise ConfigError("--store-stats needs --split validation, full-size chips (no --chip-side), the default age readout and no --limit")
    kind, root = parse_data_spec(data_dir)
    dataset = load_named(kind, root, limit=limit)
    whole = dataset
    if split != "all":
        dataset = dict(zip(("train", "validation"), split_dataset(dataset, 0.15, 42)))[split]
    if heads:  # its backbone is the one its sidecar names, unless one is given
        heads_path = Path(heads)
        trained = load_heads(heads_path)
        network = create_backbone(backbone or trained.backbone)
    else:
        network = create_backbone(backbone or DEFAULT_BACKBONE)
        heads_path = default_heads_path(network)
        trained = load_heads(heads_path)
    trained.check_backbone(network, heads_path)
    readout = AgeReadout.from_metadata(trained.metadata, age_readout)
    features = extract_activations(network, dataset, (trained.boundary,), AugmentConfig(views=2, resolution=chip_side), progress=progress, detector=detector)[trained.boundary]
    probabilities = predict_views(trained.model, features)
    labels = dataset.labels()
    report = compute_metrics(probabilities, labels, readout)
    report["data"] = str(data_dir)
    report["dataset"] = kind
    report["split"] = split
    report["chip_side"] = chip_side
    report["age_readout"] = {"name": age_readout, "alpha": readout.alpha, "temperature": readout.temperature}
    report["faces"] = box_counts(dataset, detector)
    report["skipped_names"] = whole.skipped
    report["backbone"] = network.name
    report["heads"] = str(heads_path)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report["plots"] = [str(p) for p in save_plots(report, probabilities, labels, plots_dir or output.parent / (output.stem + "_plots"), readout=readout)]
    output.write_text(json.dumps(report, indent=2))
    if store_stats:
        store_quantification_stats(heads_path, kind, quantification_stats(probabilities, labels, readout))
    return report


def quantification_stats(probabilities: dict[str, np.ndarray], labels: dict[str, np.ndarray], readout: AgeReadout) -> dict:
    """What `howold report` needs to correct counted shares, from validation faces
    (quantification.ClassStats each): gender, race (5), race_fairface (7; faces whose label
    names one), and age_years (101 x 101, exact ages only) from the distribution as `readout`
    reads it and its point age, as analyses report them."""
    from .quantification import fit_stats, fit_year_stats

    gender = np.asarray(labels["gender"])
    stats = {"faces": int(len(gender)), "gender": fit_stats(gender, probabilities["gender"], GENDERS).to_dict()}
    race = np.asarray(probabilities["race"], np.float64)
    known = np.asarray(labels["race"]) >= 0
    stats["race"] = fit_stats(np.asarray(labels["race"])[known], race5_probabilities(race)[known], RACES).to_dict()
    if race.shape[1] == len(FAIRFACE_RACES):
        race7 = np.asarray(labels.get("race7", np.full(len(gender), -1)))
        known = race7 >= 0
        if known.any():
            stats["race_fairface"] = fit_stats(race7[known], race[known], FAIRFACE_RACES).to_dict()
    ages = np.asarray(labels.get("age", np.full(len(gender), -1)))
    exact = ages >= 0
    if exact.any():
        distributions = readout.apply(np.asarray(probabilities["age"], np.float64)[exact])
        stats["age_years"] = fit_year_stats(ages[exact], readout.point_of(distributions), distributions).to_dict()
    return stats
