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


def test_float16_storage_halves_the_file_and_keeps_predictions(tmp_path):
    from face.heads import store_float16

    model = build_heads(HeadsConfig(feature_size=128))
    full = save_heads(model, tmp_path / "full.keras", {"backbone": {"backbone": "dlib-resnet", "feature_size": 128}})
    half = save_heads(model, tmp_path / "half.keras", {"backbone": {"backbone": "dlib-resnet", "feature_size": 128}})
    store_float16(half)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    features = np.random.default_rng(0).normal(size=(8, 128)).astype(np.float32)
    before, after = load_heads(full), load_heads(half)
    assert all(w.dtype == "float32" for w in after.model.weights)
    for name, values in before.predict(features).items():
        assert np.abs(values - after.predict(features)[name]).max() < 2e-3


def test_every_shipped_model_file_is_at_most_12_mb():
    from face.paths import shipped_weights_dir

    sizes = {path.name: path.stat().st_size for path in shipped_weights_dir().iterdir() if path.is_file()}
    assert sizes and max(sizes.values()) <= 12 * 2**20, sizes
