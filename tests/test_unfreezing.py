import csv
import json
import subprocess
import sys
from dataclasses import replace

import keras
import numpy as np
import pytest

from face import Analyzer
from face.backbones import INPUT_LAYER, create_backbone
from face.backbones.levi_hassner import LeviHassner
from face.data import load_dataset
from face.evaluation import evaluate_folder
from face.features import AugmentConfig, cache_folder, extract_activations, extract_features
from face.heads import HeadsConfig, build_heads
from face.model import load_heads
from face.training import TrainConfig
from face.unfreezing import ActivationBatches, LayerwiseAdam, fine_tune, parse_schedule, phase_model, stage_learning_rate_factors

from conftest import astronaut_face, make_utkface_folder


@pytest.fixture(scope="module")
def dlib_keras():
    return create_backbone("dlib-resnet-keras")


def random_chips(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_boundaries_count_stages_from_the_end(dlib_keras):
    assert dlib_keras.boundary(0) is None
    assert dlib_keras.boundary(1) == "level4" and dlib_keras.boundary(2) == "level3"
    assert dlib_keras.boundary(len(dlib_keras.stages)) == INPUT_LAYER
    with pytest.raises(ValueError, match="has 6 stages"):
        dlib_keras.boundary(7)
    assert parse_schedule(["1", "2"], dlib_keras) == (1, 2)
    assert parse_schedule(["embedding", "level3"], dlib_keras) == (1, 3)
    assert parse_schedule(["all"], dlib_keras) == (6,)
    for bad, message in ((["2", "1"], "more stages each time"), (["level9"], "stem, level1"), (["0"], "heads-only"), ([], "empty")):
        with pytest.raises(ValueError, match=message):
            parse_schedule(bad, dlib_keras)


def test_part_above_a_boundary_continues_the_network(dlib_keras):
    chips = random_chips(6, 150)
    values = dlib_keras.activations(chips, ("level3", "level4", None, INPUT_LAYER))
    assert values["level3"].shape == (6, 8, 8, 128) and values["level4"].shape == (6, 4, 4, 256)
    assert np.array_equal(values[INPUT_LAYER], chips.astype(np.float32))
    for boundary in ("level3", "level4"):
        above = np.asarray(dlib_keras.top_model(boundary)(values[boundary]))
        assert np.abs(above - values[None]).max() < 1e-4
    assert np.abs(values[None] - dlib_keras.embed(chips)).max() < 1e-5


def test_one_pass_fills_every_boundary_cache_and_reuses_it(dlib_keras, tiny_utkface, tmp_path):
    tmp_path = tmp_path / "cache"
    dataset = load_dataset(tiny_utkface, limit=6)
    augment = AugmentConfig(views=2)
    first = extract_activations(dlib_keras, dataset, ("level3", "level4"), augment, cache_root=tmp_path, progress=False)
    assert first["level3"].shape == (6, 2, 8, 8, 128) and first["level3"].dtype == np.float16
    folders = sorted(p.name.rsplit("-", 1)[0] for p in tmp_path.iterdir())
    assert folders == ["dlib-resnet-keras-level3", "dlib-resnet-keras-level4"]
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("chunk_*.npy")}
    again = extract_activations(dlib_keras, dataset, ("level4",), augment, cache_root=tmp_path, progress=False)
    assert np.array_equal(again["level4"], first["level4"])
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("chunk_*.npy")} == mtimes
    # the level-4 cache continued through the network gives the cached features
    features = extract_features(dlib_keras, dataset, augment, cache_root=tmp_path, progress=False)
    above = np.asarray(dlib_keras.top_model("level4")(first["level4"][:, 0].astype(np.float32)))
    assert np.abs(above - features[:, 0]).max() < 0.01  # float16 caches on both sides


def test_layerwise_adam_gives_listed_variables_a_smaller_step():
    inputs = keras.Input((4,))
    slow, fast = keras.layers.Dense(3, name="slow"), keras.layers.Dense(1, name="fast")
    model = keras.Model(inputs, fast(slow(inputs)))
    optimizer = LayerwiseAdam(0.01, variable_factors={v.path: 0.1 for v in slow.trainable_variables})
    model.compile(optimizer=optimizer, loss="mse")
    before = [np.array(v) for v in model.trainable_variables]
    model.train_on_batch(np.ones((8, 4), np.float32), np.full((8, 1), 5.0, np.float32))
    steps = {v.path: np.abs(np.array(v) - b).max() for v, b in zip(model.trainable_variables, before)}
    # Adam's first step moves every weight by about its learning rate
    assert steps["slow/kernel"] == pytest.approx(0.001, rel=0.05) and steps["fast/kernel"] == pytest.approx(0.01, rel=0.05)
    assert LayerwiseAdam.from_config(optimizer.get_config()).variable_factors == {"slow/kernel": 0.1, "slow/bias": 0.1}


def test_stages_further_from_the_heads_learn_slower(dlib_keras):
    top = dlib_keras.top_model("level3")
    factors = stage_learning_rate_factors(dlib_keras, top, 0.1)
    assert factors["embedding/kernel"] == pytest.approx(0.1) and factors["level5_block1_conv1/kernel"] == pytest.approx(0.1)
    assert factors["level4_block1_conv1/kernel"] == pytest.approx(0.01) and factors["level4_block3_conv2/bias"] == pytest.approx(0.01)
    assert not any(name.startswith(("level3", "stem")) for name in factors)
    scratch = LeviHassner()
    assert set(stage_learning_rate_factors(scratch, scratch.model, 0.1).values()) == {1.0}


def test_batches_draw_one_view_per_image_and_mix_up():
    activations = np.arange(5 * 3, dtype=np.float16).reshape(5, 3, 1)
    targets = {"age": np.eye(5, dtype=np.float32)}
    plain = ActivationBatches(activations, np.arange(5), targets, batch_size=5, views=1, mixup_alpha=0.0, seed=0)
    x, y = plain[0]
    assert sorted(x[:, 0]) == [0, 3, 6, 9, 12] and np.array_equal(x[:, 0] / 3, y["age"].argmax(axis=1))
    views = ActivationBatches(activations, np.arange(5), targets, batch_size=5, views=3, mixup_alpha=0.0, seed=0)
    seen = set()
    for _ in range(6):
        seen |= set((views[0][0][:, 0] % 3).astype(int))
        views.on_epoch_end()
    assert seen == {0, 1, 2}
    mixed = ActivationBatches(activations, np.arange(5), targets, batch_size=5, views=1, mixup_alpha=0.4, seed=0)
    x, y = mixed[0]
    assert np.allclose(y["age"].sum(axis=1), 1) and (y["age"].max(axis=1) < 1).any()
    assert np.allclose(x[:, 0], y["age"] @ (np.arange(5) * 3))  # inputs and targets mixed alike


class PretrainedLeviHassner(LeviHassner):
    name = "levi-hassner-pretend-pretrained"
    pretrained = True


def test_pretrained_normalisation_stays_in_inference_mode():
    heads = build_heads(HeadsConfig(feature_size=512))
    for backbone, trainable in ((LeviHassner(), True), (PretrainedLeviHassner(), False)):
        model, top = phase_model(backbone, backbone.boundary(4), heads)
        assert backbone.boundary(4) == "norm1"
        norms = [layer for layer in top.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert [layer.name for layer in norms] == ["norm2"]
        assert norms[0].trainable is trainable
        assert top.get_layer("conv2").trainable and "conv1" not in [layer.name for layer in top.layers]


def test_unfreezing_trains_only_the_stages_above_its_boundary_and_resumes_by_phase(dlib_keras, tmp_path):
    data = make_utkface_folder(tmp_path / "utk", 32, seed=5)
    output = tmp_path / "weights" / "finetuned.keras"
    base = TrainConfig(
        data_dir=data, output=output, logs_dir=tmp_path / "logs", run_name="ft", epochs=2, batch_size=8, validation_fraction=0.25,
        augment=AugmentConfig(views=2), unfreeze=("1",), unfreeze_epochs=2, unfreeze_batch_size=8, progress=False,
    )
    report = fine_tune(base)
    assert [p["boundary"] for p in report["phases"]] == ["level4"] and report["phases"][0]["epochs"] == 2
    assert report["phases"][0]["cache_bytes"] > 24 * 2 * 4 * 4 * 256 * 2  # float16 (4, 4, 256) per view
    # no heads to start from (the shipped ones have 5 races): the frozen heads trained first read features
    # that the level-4 pass over the images wrote too, one pass, not two
    written = {
        layer: max(chunk.stat().st_mtime_ns for chunk in cache_folder(dlib_keras, load_dataset(data), base.augment, layer).glob("chunk_*.npy"))
        for layer in (None, "level4")
    }
    assert max(written.values()) < (tmp_path / "logs" / "ft" / "frozen_heads.keras").stat().st_mtime_ns

    # add a second phase: the first is not trained again, the second warm-starts from it
    phase_one = tmp_path / "logs" / "ft" / "unfreeze-1" / "history.csv"
    rows = phase_one.read_text()
    from face.cli import main

    command = [
        "train", "--data", str(data), "--output", str(output), "--logs", str(tmp_path / "logs"),
        "--run-name", "ft", "--epochs", "2", "--batch-size", "8", "--views", "2", "--unfreeze", "1,2", "--unfreeze-epochs", "2",
    ]
    assert main(command) == 0  # the CLI in this process: a subprocess would only add an import of TensorFlow
    assert phase_one.read_text() == rows
    history = list(csv.DictReader((tmp_path / "logs" / "ft" / "unfreeze-2" / "history.csv").open()))
    assert [int(row["epoch"]) for row in history] == [0, 1]
    assert list((tmp_path / "logs" / "ft" / "unfreeze-2" / "tensorboard").rglob("events.out.tfevents.*"))

    saved = load_heads(output)
    assert saved.boundary == "level3" and saved.metadata["input_shape"] == [8, 8, 128]
    fresh = subprocess.run([sys.executable, "-c", f"from face.model import load_heads; print(load_heads({str(output)!r}).boundary)"], capture_output=True, text=True, env=_env(tmp_path))
    assert fresh.stdout.strip() == "level3", fresh.stderr[-2000:]  # loads without importing the backbone first
    assert [p["unfrozen_stages"] for p in saved.metadata["training"]["phases"]] == [1, 2]
    original = dlib_keras.model
    inner = saved.model.get_layer("dlib_resnet_above_level3")
    for name, changed in (("level4_block1_conv1", True), ("level5_block1_conv2", True), ("embedding", True), ("level4_block1_affine1", False)):
        difference = max(np.abs(a - b).max() for a, b in zip(inner.get_layer(name).get_weights(), original.get_layer(name).get_weights()))
        assert bool(difference > 0) is changed, name

    analyzer = Analyzer(heads=output)
    faces = analyzer.analyze(astronaut_face(), boxes=[(40, 40, 160, 170)])
    assert len(faces) == 1 and 0 <= faces[0]["age"] <= 100 and faces[0]["gender"] in ("male", "female")
    with pytest.raises(Exception, match="use --backbone dlib-resnet-keras"):
        Analyzer(backbone="levi-hassner", heads=output)


def test_levi_hassner_trains_end_to_end_from_scratch(tmp_path):
    data = make_utkface_folder(tmp_path / "utk", 24, seed=2)
    backbone = create_backbone("levi-hassner")
    assert backbone.model.output_shape == (None, 512) and not backbone.pretrained
    assert [backbone.model.get_layer(name).output.shape[1:] for name in backbone.stages[:3]] == [(7, 7, 96), (3, 3, 256), (1, 1, 384)]
    output = tmp_path / "lh.keras"
    config = TrainConfig(
        data_dir=data, backbone="levi-hassner", output=output, logs_dir=tmp_path / "logs", unfreeze=("all",), unfreeze_epochs=2,
        unfreeze_batch_size=8, validation_fraction=0.25, augment=AugmentConfig(views=2), progress=False,
    )
    report = fine_tune(config)
    assert report["phases"][0]["boundary"] == INPUT_LAYER and report["phases"][0]["trainable_backbone_parameters"] > 1_900_000
    saved = load_heads(output)
    first_layer = saved.model.get_layer("levi_hassner").get_layer("conv1").get_weights()[0]
    assert not np.allclose(first_layer, backbone.model.get_layer("conv1").get_weights()[0])  # it learned
    faces = Analyzer(backbone="levi-hassner", heads=output).analyze(astronaut_face(), boxes=[(40, 40, 160, 170)])
    assert json.dumps(faces) and faces[0]["race"] in saved.metadata["classes"]["race"]
    # evaluated without --backbone: the sidecar's backbone, not the default one
    evaluation = evaluate_folder(data, tmp_path / "lh-report.json", heads=output, progress=False)
    assert evaluation["n"] == 24


def _env(tmp_path):
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}  # the same HOWOLD_HOME, so the same caches


def test_impossible_schedules_are_one_line_errors(tiny_utkface, capsys):
    from face.cli import main

    assert main(["train", "--data", str(tiny_utkface), "--backbone", "dlib-resnet", "--unfreeze", "1"]) == 2
    assert "not a Keras network, so it cannot be unfrozen" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_utkface), "--unfreeze", "level9"]) == 2
    assert "a stage of dlib-resnet-keras (stem, level1, level2, level3, level4, embedding)" in capsys.readouterr().err


def test_backbones_command_lists_stages(capsys):
    from face.cli import main

    assert main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "dlib-resnet-keras  (stages: stem, level1, level2, level3, level4, embedding)" in lines and "dlib-resnet" in lines


def test_warm_start_heads_are_checked_before_any_extraction(dlib_keras, tiny_utkface, tmp_path):
    from face.errors import WeightsError
    from face.heads import save_heads
    from face.model_files import default_heads_path
    from face.unfreezing import starting_heads, warm_start_path

    config = TrainConfig(data_dir=tiny_utkface, logs_dir=tmp_path / "logs", run_name="warm", unfreeze=("1",), progress=False)
    # the shipped frozen heads have UTKFace's 5 races, not the 7 trained now: frozen heads first
    assert len(load_heads(default_heads_path(dlib_keras, frozen=True)).metadata["classes"]["race"]) == 5 and warm_start_path(config, dlib_keras) is None
    missing = replace(config, init_heads=tmp_path / "nowhere.keras")
    with pytest.raises(WeightsError, match="nowhere.keras: no such heads file"):
        starting_heads(missing, dlib_keras, warm_start_path(missing, dlib_keras))
    small = save_heads(build_heads(HeadsConfig(feature_size=64)), tmp_path / "small.keras", {"backbone": {"backbone": "x", "feature_size": 64}}, export=False)
    with pytest.raises(WeightsError, match="not heads on dlib-resnet-keras's 128 features"):
        warm_start_path(replace(config, init_heads=small), dlib_keras)
    earlier = save_heads(build_heads(HeadsConfig(feature_size=128)), config.run_dir() / "frozen_heads.keras", {"backbone": {"backbone": "dlib-resnet-keras", "feature_size": 128}}, export=False)
    assert warm_start_path(config, dlib_keras) == earlier  # a resumed run keeps the heads it trained
