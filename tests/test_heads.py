import json
from pathlib import Path

import numpy as np
import pytest

from face.errors import WeightsError
from face.heads import HeadsConfig, age_distribution_targets, build_heads, one_hot, save_heads
from face.model import load_heads
from face.readout import AGE_GROUPS, age_group_probabilities, age_percentiles, expected_age, interpret


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
    path = save_heads(model, tmp_path / "new" / "folders" / "h.keras", {"backbone": {"backbone": "x", "feature_size": 16}})  # made as needed
    loaded = load_heads(path)
    features = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    expected = model.predict(features, verbose=0)
    got = loaded.predict(features)
    for name in ("age", "gender", "race"):
        assert np.allclose(expected[name], got[name], atol=1e-6)
    assert loaded.backbone == "x"
    # no faces: empty arrays of each head's width
    empty = loaded.predict(np.zeros((0, 16), np.float32))
    assert {name: array.shape for name, array in empty.items()} == {name: (0, expected[name].shape[1]) for name in ("age", "gender", "race")}


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


def test_interpret_rounds_each_field_as_documented():
    """Ages and interval to 0.1 year, confidences to 4 decimals, plain floats, the documented keys."""
    age = np.zeros((1, 101))
    age[0, [30, 31, 36]] = [0.35, 0.33333, 0.31667]
    gender, race = np.array([[0.123456, 0.876544]]), np.array([[0.111111, 0.222222, 0.333333, 0.2, 0.133334]])
    face = interpret({"age": age.astype(np.float32), "gender": gender.astype(np.float32), "race": race.astype(np.float32)})[0]
    assert face == {
        "age": 32.2,  # 32.23335
        "age_interval": [29.3, 35.7],  # 29.2857, 35.6842
        "age_group": "25-32",
        "age_group_confidence": 0.6833,  # 0.68333
        "gender": "female",
        "gender_confidence": 0.8765,  # 0.876544
        "race": "Asian",
        "race_confidences": {"White": 0.1111, "Black": 0.2222, "Asian": 0.3333, "Indian": 0.2, "Others": 0.1333},
        "age_distribution": [0] * 30 + [350, 333, 0, 0, 0, 0, 317] + [0] * 64,  # per mille, for `howold report`
    }
    assert all(type(v) is float for v in [face["age"], *face["age_interval"], face["age_group_confidence"], face["gender_confidence"], *face["race_confidences"].values()])


def test_targets_and_answers_are_float32_arrays():
    """float32 throughout: the training targets of 16,749 images x 4 views x 101 ages are big enough."""
    ages = np.array([-3, 0, 30.5, 100, 116])
    targets = age_distribution_targets(ages, 2.0)
    assert targets.dtype == np.float32 and list(targets.argmax(axis=1)) == [0, 0, 30, 100, 100]  # clipped both ends
    assert np.allclose(targets[0], targets[1]) and np.allclose(targets[3], targets[4])
    centred = age_distribution_targets(np.array([50]), 3.0)[0]
    assert np.sqrt(centred @ (np.arange(101) - 50.0) ** 2) == pytest.approx(3.0, abs=0.01)  # sigma is the spread
    assert one_hot(np.array([1.0, 0.0]), 2).dtype == np.float32  # labels may arrive as floats
    assert np.array_equal(one_hot(np.array([1.0, 0.0]), 2), [[0, 1], [1, 0]])
    assert age_percentiles(targets).dtype == np.float32 and age_group_probabilities(targets).dtype == np.float32


def test_percentiles_of_a_distribution_reaching_100():
    probabilities = np.zeros((1, 101))
    probabilities[0, 90], probabilities[0, 100] = 1.0, 1.0  # unnormalised, half the mass at the very end
    low, high = age_percentiles(probabilities)[0]
    assert low == pytest.approx(89.2, abs=1e-4) and high == pytest.approx(99.8, abs=1e-4)


def test_heads_architecture():
    """A shared layer, then per head a hidden layer and a softmax; names are what saved files and unfreezing refer to."""
    config = HeadsConfig(feature_size=16, hidden_units=12, head_units=8, dropout=0.25)
    model = build_heads(config)
    layers = {layer.name: layer for layer in model.layers}
    assert model.input_shape == (None, 16) and model.inputs[0].name.startswith("features")
    assert layers["shared"].units == 12 and layers["shared"].activation.__name__ == "relu"
    assert layers["shared_dropout"].rate == 0.25
    for head, classes in (("age", 101), ("gender", 2), ("race", 7)):  # race: FairFace's 7
        assert layers[f"{head}_hidden"].units == 8 and layers[f"{head}_hidden"].activation.__name__ == "relu"
        assert layers[f"{head}_dropout"].rate == 0.25
        assert layers[head].units == classes and layers[head].activation.__name__ == "softmax"
    assert set(model.output_names if hasattr(model, "output_names") else model.output) == {"age", "gender", "race"}
    outputs = model(np.zeros((2, 16), np.float32), training=False)
    assert {name: tuple(value.shape) for name, value in outputs.items()} == {"age": (2, 101), "gender": (2, 2), "race": (2, 7)}
    assert build_heads(HeadsConfig(feature_size=16, race_classes=5)).get_layer("race").units == 5  # UTKFace's 5, as before


def test_age_loss_is_cross_entropy_plus_weighted_expectation_error():
    from face.heads import age_loss

    truth, guess = age_distribution_targets(np.array([30, 60]), 2.0), age_distribution_targets(np.array([35, 58]), 3.0)
    loss = np.asarray(age_loss(0.05)(truth, guess))
    entropy = -(truth * np.log(np.clip(guess, 1e-7, 1.0))).sum(axis=1)
    assert loss.shape == (2,)
    assert np.allclose(loss, entropy + 0.05 * np.array([5.0, 2.0]), rtol=1e-4, atol=1e-3)
    assert np.allclose(np.asarray(age_loss(0.0)(truth, guess)), entropy, rtol=1e-4, atol=1e-3)


def test_predict_views_averages_the_chosen_views():
    from face.model import TrainedHeads, predict_views

    model = build_heads(HeadsConfig(feature_size=8, hidden_units=8, head_units=8))
    features = np.random.default_rng(2).normal(size=(3, 2, 8)).astype(np.float16)
    heads = TrainedHeads(model, {})
    plain, mirrored = heads.predict(features[:, 0].astype(np.float32)), heads.predict(features[:, 1].astype(np.float32))
    both = predict_views(model, features, (0, 1))
    only_plain = predict_views(model, features, (0,))
    for name in ("age", "gender", "race"):
        assert np.allclose(both[name], (plain[name] + mirrored[name]) / 2, atol=1e-6)
        assert np.allclose(only_plain[name], plain[name], atol=1e-6)
    assert heads.predict(np.zeros((0, 8), np.float32))["race"].shape == (0, 7)
    assert heads.predict(np.zeros((0, 8), np.float32))["age"].shape == (0, 101)


@pytest.fixture(scope="module")
def keras_backbone():
    from face.backbones import create_backbone

    return create_backbone("dlib-resnet-keras")


def test_shipped_heads_fit_their_backbone(keras_backbone, tmp_path):
    from face.model_files import default_heads_path

    finetuned, frozen = default_heads_path(keras_backbone), default_heads_path(keras_backbone, frozen=True)
    assert finetuned.name == "dlib-resnet-keras-finetuned.keras" and frozen.name == "dlib-resnet.keras"
    for path in (finetuned, frozen):
        heads = load_heads(path)
        heads.check_backbone(keras_backbone, path)  # no error
        chips = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
        features = heads.features_of(keras_backbone, chips)
        if heads.boundary is None:
            assert np.allclose(features, keras_backbone.embed(chips), atol=1e-5)
        else:
            assert features.shape[1:] == tuple(keras_backbone.layer_shape(heads.boundary))
            assert np.allclose(features, keras_backbone.activations(chips, (heads.boundary,))[heads.boundary], atol=1e-5)
        assert heads.backbone == "dlib-resnet-keras" or heads.backbone == "dlib-resnet"


def test_heads_on_the_wrong_backbone_are_a_clear_error(keras_backbone):
    from face.backbones import create_backbone
    from face.model import TrainedHeads
    from face.model_files import default_heads_path

    finetuned = load_heads(default_heads_path(keras_backbone))
    dlib = create_backbone("dlib-resnet")
    assert default_heads_path(dlib).name == "dlib-resnet.keras"  # dlib cannot run a fine-tuned network
    with pytest.raises(WeightsError, match=r"x\.keras: fine-tuned on 'dlib-resnet-keras' above its layer '[^']+'; use --backbone dlib-resnet-keras"):
        finetuned.check_backbone(dlib, "x.keras")
    renamed = TrainedHeads(finetuned.model, {**finetuned.metadata, "backbone": {**finetuned.metadata["backbone"], "backbone": "other"}})
    with pytest.raises(WeightsError, match="fine-tuned on 'other'"):
        renamed.check_backbone(keras_backbone, "x.keras")
    narrow = TrainedHeads(None, {"backbone": {"backbone": "x", "feature_size": 64}})
    with pytest.raises(WeightsError, match=r"y\.keras: expects inputs of shape \[64\], backbone 'dlib-resnet-keras' gives \[128\]"):
        narrow.check_backbone(keras_backbone, "y.keras")
    TrainedHeads(None, {"backbone": {"backbone": "x", "feature_size": 128}}).check_backbone(keras_backbone, "z.keras")
    shaped = TrainedHeads(None, {"input_shape": [128], "backbone": {"backbone": "x", "feature_size": 64}})
    shaped.check_backbone(keras_backbone, "z.keras")  # input_shape, when recorded, wins


def test_interpret_reads_the_age_as_the_readout_says():
    from face.readout import AgeReadout

    skewed = age_distribution_targets(np.array([30]), 2.0) * 0.7 + age_distribution_targets(np.array([70]), 8.0) * 0.3
    outputs = {"age": skewed, "gender": np.array([[1.0, 0.0]]), "race": np.full((1, 5), 0.2)}
    mean, median = interpret(outputs)[0], interpret(outputs, AgeReadout(point="median"))[0]
    assert mean["age"] == pytest.approx(42.0, abs=0.2) and 30 < median["age"] < 33  # the tail drags the mean, not the median
    assert median["age_interval"] == mean["age_interval"]  # the same distribution, the same percentiles
    narrow = age_distribution_targets(np.array([40]), 3.0)
    plain = interpret({**outputs, "age": narrow})[0]["age_interval"]
    wide = interpret({**outputs, "age": narrow}, AgeReadout(temperature=4.0))[0]["age_interval"]
    assert (wide[1] - wide[0]) == pytest.approx(2 * (plain[1] - plain[0]), rel=0.05)  # T 4: sigma doubles


def test_temperature_follows_the_age_between_calibration_ages():
    from face.readout import AgeReadout

    faces = age_distribution_targets(np.array([0, 10, 20, 60]), 3.0).astype(np.float64)
    faces[0] = age_distribution_targets(np.array([50]), 3.0)[0]
    readout = AgeReadout(temperature_ages=(0.0, 20.0, 50.0), temperatures=(0.5, 2.0, 1.0))
    widths = np.diff(age_percentiles(readout.apply(faces)), axis=1)[:, 0]
    plain = np.diff(age_percentiles(faces), axis=1)[:, 0]
    # T at 50: 1 (unchanged); at 10: 1.25 (halfway from 0.5 to 2); at 20: 2; past the last age: its value, 1
    assert widths[0] == pytest.approx(plain[0], rel=0.01) and widths[3] == pytest.approx(plain[3], rel=0.01)
    assert widths[1] == pytest.approx(plain[1] * np.sqrt(1.25), rel=0.05) and widths[2] == pytest.approx(plain[2] * np.sqrt(2.0), rel=0.05)


def test_the_shipped_models_readout_loads():
    from face.readout import AgeReadout

    sidecar = json.loads((Path(__file__).resolve().parents[1] / "weights" / "dlib-resnet-keras-finetuned.json").read_text())
    readout = AgeReadout.from_metadata(sidecar)
    if readout.alpha:
        assert sum(readout.prior) == pytest.approx(1.0, abs=1e-3) and min(readout.prior) > 0
    for name in sidecar.get("readout", {}).get("options", {}):
        AgeReadout.from_metadata(sidecar, name)
    answer = interpret({"age": age_distribution_targets(np.array([45]), 4.0), "gender": np.array([[0.3, 0.7]]), "race": np.full((1, 7), 1 / 7)}, readout)[0]
    assert 35 < answer["age"] < 55 and answer["age_interval"][0] < answer["age"] < answer["age_interval"][1]
