"""The band figures of compute_metrics and `howold evaluate`, on distributions and folders the tests make."""
import json

import numpy as np
import pytest

from face.data import AGE_BIN_NAMES, AGE_BINS
from face.evaluation import compute_metrics, gender_calibration
from face.evaluation_plots import age_curve
from face.heads import age_distribution_targets, training_age_prior
from face.readout import AgeReadout

BAND_KEYS = {
    "n", "age_mae", "age_mean_signed_error", "age_cs5", "interval_coverage", "interval_width", "age_bin_accuracy", "age_in_bin_accuracy",
    "gender_accuracy", "gender_confidence_mean", "race_accuracy", "race7_accuracy", "gender_calibration",
}


def outputs(centres, sigma, gender_female, race7=0):
    """Heads' outputs: Gaussian age distributions at `centres`, P(female) per face, one race."""
    count = len(centres)
    female = np.asarray(gender_female, np.float64)
    return {
        "age": age_distribution_targets(np.asarray(centres, np.float32), sigma),
        "gender": np.stack([1 - female, female], axis=1),
        "race": np.eye(7)[np.full(count, race7)],
    }


def exact_labels(ages, genders):
    ages = np.asarray(ages)
    return {"age": ages, "gender": np.asarray(genders), "race": np.zeros(len(ages), int)}


def test_bias_and_coverage_by_age_band_on_exact_ages():
    # children read 4 years older, adults exactly; sigma 2 puts the 10-90% interval at about +-2.6 years
    true = np.array([5, 6, 7, 8, 30, 32, 34, 36])
    centres = np.where(true < 10, true + 4, true)
    report = compute_metrics(outputs(centres, 2.0, np.full(8, 0.1)), exact_labels(true, np.zeros(8, int)))
    children, adults = report["by_age_bin"]["3-9"], report["by_age_bin"]["30-39"]
    assert set(children) == BAND_KEYS
    assert children["n"] == 4 and children["age_mean_signed_error"] == pytest.approx(4.0, abs=0.05) and children["age_mae"] == pytest.approx(4.0, abs=0.05)
    assert children["interval_coverage"] == 0.0  # 4 years off, interval +-2.6: never inside
    assert adults["age_mean_signed_error"] == pytest.approx(0.0, abs=0.05) and adults["interval_coverage"] == 1.0
    assert 4.5 < adults["interval_width"] < 5.8
    assert report["age_mean_signed_error"] == pytest.approx(2.0, abs=0.05) and report["interval_coverage"] == 0.5
    assert report["by_age_bin"]["0-2"]["n"] == 0 and report["by_age_bin"]["0-2"]["age_mae"] is None


def test_fairface_bins_count_as_covered_when_the_interval_overlaps_the_bin():
    bins = np.array([2, 2, 5, 5])  # 10-19 twice, 40-49 twice
    centres = np.array([21.5, 30.0, 51.0, 60.0])  # near the bin's edge, far off; past its top, far off
    labels = {"age": np.full(4, -1), "age_bin": bins, "gender": np.zeros(4, int), "race": np.zeros(4, int), "race7": np.zeros(4, int)}
    report = compute_metrics(outputs(centres, 2.0, np.full(4, 0.2)), labels)
    assert report["by_age_bin"]["10-19"]["interval_coverage"] == 0.5 and report["by_age_bin"]["40-49"]["interval_coverage"] == 0.5
    assert report["age_mae"] is None and report["age_mean_signed_error"] is None
    # the reported age lies in none of the true bins; 21.5's most probable bin is 20-29 too
    assert report["age_in_bin_accuracy"] == 0.0 and report["age_bin_accuracy"] == 0.0
    inside = compute_metrics(outputs(np.array([19.4, 12.0, 40.2, 49.5]), 1.0, np.full(4, 0.2)), labels)
    assert inside["age_in_bin_accuracy"] == 1.0 and inside["interval_coverage"] == 1.0


def test_gender_calibration_compares_confidence_with_accuracy():
    confidence = np.array([0.55, 0.58, 0.65, 0.95, 0.97, 1.0])
    correct = np.array([True, False, True, True, True, False])
    table = gender_calibration(confidence, correct)
    assert [row["confidence"] for row in table] == ["0.5-0.6", "0.6-0.7", "0.7-0.8", "0.8-0.9", "0.9-1.0"]
    assert [row["n"] for row in table] == [2, 1, 0, 0, 3]
    assert table[0]["accuracy"] == 0.5 and table[0]["mean_confidence"] == pytest.approx(0.565)
    assert table[4]["accuracy"] == pytest.approx(0.6667, abs=1e-4) and table[2]["accuracy"] is None


def test_gender_figures_by_band():
    # children: unsure (0.6) and right 2 times of 4; adults: sure and always right
    true = np.array([5, 6, 7, 8, 40, 41, 42, 43])
    genders = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    female = np.array([0.4, 0.4, 0.6, 0.6, 0.05, 0.95, 0.05, 0.95])
    report = compute_metrics(outputs(true, 2.0, female), exact_labels(true, genders))
    children, adults = report["by_age_bin"]["3-9"], report["by_age_bin"]["40-49"]
    assert children["gender_accuracy"] == 0.5 and children["gender_confidence_mean"] == pytest.approx(0.6)
    assert adults["gender_accuracy"] == 1.0 and adults["gender_confidence_mean"] == pytest.approx(0.95)
    assert children["gender_calibration"][1] == {"confidence": "0.6-0.7", "n": 4, "mean_confidence": 0.6, "accuracy": 0.5}
    json.dumps(report)


def test_a_readout_changes_every_age_figure_and_nothing_else():
    true = np.array([70, 72, 74, 76])
    probabilities = outputs(true - 6.0, 4.0, np.full(4, 0.1))
    labels = exact_labels(true, np.zeros(4, int))
    prior = np.exp(-0.5 * ((np.arange(101) - 28) / 12) ** 2) + 1e-3  # piled up at 28, like UTKFace
    readout = AgeReadout(alpha=1.0, temperature=1.0, prior=tuple(prior / prior.sum()))
    plain, divided = compute_metrics(probabilities, labels), compute_metrics(probabilities, labels, readout)
    assert plain["age_mean_signed_error"] == pytest.approx(-6.0, abs=0.1)
    assert divided["age_mean_signed_error"] > plain["age_mean_signed_error"] + 2
    assert divided["gender_accuracy"] == plain["gender_accuracy"] and divided["race_accuracy"] == plain["race_accuracy"]
    wider = compute_metrics(probabilities, labels, AgeReadout(temperature=2.0))
    assert wider["interval_width"] == pytest.approx(plain["interval_width"] * np.sqrt(2), rel=0.02)
    assert wider["age_mean_signed_error"] == pytest.approx(plain["age_mean_signed_error"], abs=0.05)


def test_age_curve_by_exact_ages_and_by_bins():
    true = np.repeat([10, 50], 6)
    probabilities = outputs(true + 2.0, 2.0, np.full(12, 0.5))["age"]
    curve = age_curve(probabilities, {"age": true, "age_bin": np.full(12, -1)})
    assert curve["kind"] == "ages" and curve["x"] == [10.0, 50.0] and curve["n"] == [6, 6]
    assert curve["mean"] == pytest.approx([12.0, 52.0], abs=0.05) and all(l < m < h for l, m, h in zip(curve["low"], curve["mean"], curve["high"]))
    bins = age_curve(probabilities, {"age": np.full(12, -1), "age_bin": np.repeat([2, 5], 6)})
    assert bins["kind"] == "bins" and bins["x"] == [15.0, 45.0]


def test_training_prior_spreads_bins_like_the_exact_ages_inside_them():
    ages = np.array([25] * 8 + [-1] * 4)
    bins = np.array([3] * 8 + [3, 3, 8, 8])  # two more faces in 20-29, two in 70+
    prior = training_age_prior(ages, bins, floor=0.0)
    assert prior.sum() == pytest.approx(1.0)
    assert prior[25] == prior.max() and prior[20:30].sum() > 0.8 - 0.01
    low, high = AGE_BINS[8]
    assert prior[low : high + 1].sum() == pytest.approx(2 / 12, abs=0.01)  # flat over 70-100: no exact age there
    floored = training_age_prior(ages, bins, floor=0.02)
    assert floored.min() >= 0.02 / 101 - 1e-12


def test_readout_from_the_sidecar_and_its_errors():
    from face.errors import WeightsError

    prior = tuple(np.full(101, 1 / 101))
    metadata = {"readout": {"alpha": 0.5, "temperature": 1.2, "prior": list(prior), "options": {"least-error": {"alpha": 0.0, "temperature": 1.0}}}}
    assert AgeReadout.from_metadata(metadata) == AgeReadout(0.5, 1.2, prior)
    assert AgeReadout.from_metadata(metadata, "raw").identity and AgeReadout.from_metadata({}).identity
    assert AgeReadout.from_metadata(metadata, "least-error") == AgeReadout(0.0, 1.0, prior)
    with pytest.raises(WeightsError, match="unknown age readout 'fast'; this model has default, raw, least-error"):
        AgeReadout.from_metadata(metadata, "fast")
    with pytest.raises(ValueError, match="temperatures must be positive"):
        AgeReadout(temperature=0)
    with pytest.raises(ValueError, match="needs a prior"):
        AgeReadout(alpha=1.0)
    assert AgeReadout.from_dict(AgeReadout(0.5, 1.2, prior).to_dict()).alpha == 0.5


def test_howold_evaluate_scores_the_validation_split_by_band(tiny_utkface, tmp_path, capsys):
    """The shipped model on the 15% validation side of a made folder (24 faces: 4)."""
    from face.cli import main
    from face.data import load_dataset, split_dataset

    output = tmp_path / "report.json"
    assert main(["evaluate", "--data", str(tiny_utkface), "--split", "validation", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    validation = split_dataset(load_dataset(tiny_utkface), 0.15, 42)[1]
    assert report["n"] == len(validation) == 4 and report["split"] == "validation"
    assert set(report["by_age_bin"]) == set(AGE_BIN_NAMES)
    for key in ("by_race", "by_race7", "by_gender", "by_age_bin"):
        for group in report[key].values():
            assert set(group) == BAND_KEYS
    assert report["age_readout"]["name"] == "default"
    assert any(p.endswith("age_by_true_age.png") for p in report["plots"])
    printed = capsys.readouterr().out
    assert '"interval_coverage"' in printed and '"age_mean_signed_error"' in printed
    assert main(["evaluate", "--data", str(tiny_utkface), "--age-readout", "nonsense", "--output", str(output)]) == 2
    assert "unknown age readout 'nonsense'" in capsys.readouterr().err


def test_howold_evaluate_measures_small_faces_with_chip_side(tiny_utkface, tmp_path, capsys):
    from face.cli import main

    reports = {}
    for side in (None, 40):
        output = tmp_path / f"report-{side}.json"
        extra = [] if side is None else ["--chip-side", str(side)]
        assert main(["evaluate", "--data", str(tiny_utkface), "--split", "validation", "--output", str(output), *extra]) == 0
        reports[side] = json.loads(output.read_text())
    assert reports[None]["chip_side"] is None and reports[40]["chip_side"] == 40
    assert reports[40]["n"] == reports[None]["n"] == 4
    assert reports[40]["gender_confidence_mean"] != reports[None]["gender_confidence_mean"]
    capsys.readouterr()
    assert main(["evaluate", "--data", str(tiny_utkface), "--chip-side", "4", "--output", str(tmp_path / "r.json")]) == 2
    assert "at least 8 px" in capsys.readouterr().err
