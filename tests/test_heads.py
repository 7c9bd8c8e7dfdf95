import json

import numpy as np
import pytest

from face.errors import WeightsError
from face.heads import (
    AGE_GROUPS,
    HeadsConfig,
    age_distribution_targets,
    age_group_probabilities,
    age_percentiles,
    build_heads,
    expected_age,
    interpret,
    load_heads,
    one_hot,
    save_heads,
)


def test_age_targets_are_distributions_centred_on_the_age():
    targets = age_distribution_targets(np.array([0, 30, 100, 116]), sigma=2.0)
    assert np.allclose(targets.sum(axis=1), 1.0)
    assert list(targets.argmax(axis=1)) == [0, 30, 100, 100]
    assert abs(expected_age(targets[1:2])[0] - 30) < 1e-3


def test_interval_and_groups_follow_the_distribution():
    probabilities = age_distribution_targets(np.array([40]), sigma=3.0)
    low, high = age_percentiles(probabilities)[0]
    assert 35 < low < 40 < high < 45
    groups = age_group_probabilities(probabilities)
    assert np.isclose(groups.sum(), 1.0)
    assert AGE_GROUPS[int(groups.argmax())] == (38, 43)


def test_one_hot_with_smoothing():
    targets = one_hot(np.array([1, 0]), 2, smoothing=0.1)
    assert np.allclose(targets, [[0.05, 0.95], [0.95, 0.05]])


def test_interpret_gives_the_documented_fields():
    answers = interpret(
        {
            "age": age_distribution_targets(np.array([25]), 2.0),
            "gender": np.array([[0.2, 0.8]]),
            "race": np.array([[0.1, 0.6, 0.1, 0.1, 0.1]]),
        }
    )
    face = answers[0]
    assert face["gender"] == "female" and face["gender_confidence"] == 0.8
    assert face["race"] == "Black" and set(face["race_confidences"]) == {"White", "Black", "Asian", "Indian", "Others"}
    assert face["age_group"] == "25-32" and abs(face["age"] - 25) < 0.1
    json.dumps(answers)


def test_save_and_load_round_trip(tmp_path):
    model = build_heads(HeadsConfig(feature_size=16, hidden_units=8, head_units=8))
    path = save_heads(model, tmp_path / "h.keras", {"backbone": {"backbone": "x", "feature_size": 16}})
    loaded = load_heads(path)
    features = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    expected = model.predict(features, verbose=0)
    got = loaded.predict(features)
    for name in ("age", "gender", "race"):
        assert np.allclose(expected[name], got[name], atol=1e-6)
    assert loaded.backbone == "x"


def test_broken_heads_files_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such heads file"):
        load_heads(tmp_path / "absent.keras")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="sidecar"):
        load_heads(bad)
    bad.with_suffix(".json").write_text("{}")
    with pytest.raises(WeightsError, match="not a loadable Keras heads file"):
        load_heads(bad)


# ---- answers from skewed distributions: mean, mode and median differ ---------------------


def two_peaks(young: int, old: int, weight_young: float) -> np.ndarray:
    """An age distribution with two spikes, so that its mean lies between them."""
    probabilities = np.zeros((1, 101))
    probabilities[0, young], probabilities[0, old] = weight_young, 1.0 - weight_young
    return probabilities


def test_age_is_the_expectation_not_the_most_likely_year():
    probabilities = two_peaks(20, 60, 0.6)  # mode 20, mean 36
    assert expected_age(probabilities)[0] == pytest.approx(36.0)
    face = interpret({"age": probabilities, "gender": np.array([[0.5, 0.5]]), "race": np.full((1, 5), 0.2)})[0]
    assert face["age"] == 36.0
    # a long tail to the old side pulls the mean above the mode, as on a real skewed prediction
    skewed = age_distribution_targets(np.array([30]), 2.0) * 0.7 + age_distribution_targets(np.array([70]), 8.0) * 0.3
    assert interpret({"age": skewed, "gender": np.array([[1.0, 0.0]]), "race": np.full((1, 5), 0.2)})[0]["age"] == pytest.approx(0.7 * 30 + 0.3 * 70, abs=0.2)


def test_interval_is_the_10th_to_90th_percentile():
    flat = np.zeros((1, 101))
    flat[0, 10:60] = 1 / 50  # uniform over 10..59
    low, high = age_percentiles(flat)[0]
    # the CDF reaches 0.1 at age 14 and 0.9 at age 54 (linear interpolation between years)
    assert low == pytest.approx(14.0, abs=1e-4) and high == pytest.approx(54.0, abs=1e-4)
    low, high = age_percentiles(flat, 0.5, 0.5)[0]
    assert low == high == pytest.approx(34.0, abs=1e-4)
    # unnormalised rows are normalised first
    assert np.allclose(age_percentiles(flat * 3), age_percentiles(flat))


@pytest.mark.parametrize(
    "age, group",
    # the boundaries lie halfway between groups (3, 7, 13.5, 22.5, 35, 45.5, 56.5); a tie goes to the older group
    [(0, "0-2"), (2, "0-2"), (3, "4-6"), (6, "4-6"), (7, "8-12"), (13, "8-12"), (14, "15-20"), (22, "15-20"), (23, "25-32"),
     (34, "25-32"), (35, "38-43"), (45, "38-43"), (46, "48-53"), (56, "48-53"), (57, "60-100"), (100, "60-100")],
)
def test_each_age_joins_the_nearer_adience_group(age, group):
    spike = np.zeros((1, 101))
    spike[0, age] = 1.0
    face = interpret({"age": spike, "gender": np.array([[1.0, 0.0]]), "race": np.full((1, 5), 0.2)})[0]
    assert face["age_group"] == group
    assert face["age_group_confidence"] == 1.0


def test_age_group_is_the_group_holding_most_probability_not_the_mean_age():
    probabilities = two_peaks(5, 70, 0.55)  # the mean (34) lies in 25-32, but 4-6 holds 55%
    face = interpret({"age": probabilities, "gender": np.array([[1.0, 0.0]]), "race": np.full((1, 5), 0.2)})[0]
    assert face["age_group"] == "4-6" and face["age_group_confidence"] == 0.55
    groups = age_group_probabilities(np.vstack([probabilities, probabilities[:, ::-1]]))
    assert np.allclose(groups.sum(axis=1), 1.0)
    assert groups[0, 1] == pytest.approx(0.55) and groups[0, 7] == pytest.approx(0.45)


def test_race_and_gender_classes_are_utkface_order():
    """UTKFace's labels: gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others."""
    from face.data import GENDERS, RACES

    assert GENDERS == ("male", "female")
    assert RACES == ("White", "Black", "Asian", "Indian", "Others")
    answers = interpret({"age": np.tile(age_distribution_targets(np.array([30]), 2.0), (5, 1)), "gender": np.eye(2)[[0, 1, 0, 1, 0]], "race": np.eye(5)})
    assert [a["race"] for a in answers] == ["White", "Black", "Asian", "Indian", "Others"]
    assert [a["gender"] for a in answers] == ["male", "female", "male", "female", "male"]
    assert [a["race_confidences"][a["race"]] for a in answers] == [1.0] * 5
    assert list(answers[2]["race_confidences"]) == list(RACES)


def test_shipped_models_record_the_same_class_order():
    """A heads file's outputs are in the order it was trained with; its sidecar says which."""
    from face.data import GENDERS, RACES
    from face.paths import shipped_weights_dir

    sidecars = sorted(shipped_weights_dir().glob("*.json"))
    assert sidecars
    for sidecar in sidecars:
        classes = json.loads(sidecar.read_text())["classes"]
        assert classes["race"] == list(RACES) and classes["gender"] == list(GENDERS), sidecar.name
