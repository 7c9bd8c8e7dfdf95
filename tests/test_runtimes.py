"""Inference runtimes: the ONNX graph translated from the shipped Keras models gives the same
probabilities as Keras itself, on real chips, and the Analyzer uses it by default."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from face import Analyzer
from face.backbones import create_backbone
from face.errors import ConfigError
from face.model import TrainedHeads, load_heads
from face.model_files import default_heads_path
from face.onnx_export import ExportError, export_onnx
from face.runtimes import create_runtime, list_runtimes
from face.keras_onnx import TOLERANCE


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("dlib-resnet-keras")


@pytest.fixture(scope="module")
def chips(backbone) -> np.ndarray:
    """Seven aligned chips of real photos: the astronaut's face, plain, mirrored, darkened,
    and four non-face chips (coffee, cat, rocket, a grey ramp), so every path is exercised."""
    from skimage import data

    analyzer = Analyzer(detector="yunet", runtime="keras")
    face = analyzer.chips(data.astronaut(), analyzer.detect(data.astronaut()))[0]
    size = backbone.chip.size
    others = [np.asarray(Image.fromarray(image).resize((size, size))) for image in (data.coffee(), data.chelsea(), data.rocket())]
    ramp = np.linspace(0, 255, size * size * 3).reshape(size, size, 3)
    return np.stack([face, face[:, ::-1], face // 3, *others, ramp]).astype(np.uint8)


@pytest.mark.parametrize("frozen", [False, True], ids=["fine-tuned above level3", "frozen heads"])
def test_onnx_gives_keras_probabilities_for_each_shipped_model(backbone, chips, frozen):
    heads = load_heads(default_heads_path(backbone, frozen=frozen))
    assert (heads.boundary is None) == frozen
    onnx, keras = create_runtime("onnx", backbone, heads), create_runtime("keras", backbone, heads)
    fast, reference = onnx.predict(chips, batch_size=3), keras.predict(chips, batch_size=4)  # ragged chunks
    for name in ("age", "gender", "race"):
        assert fast[name].shape == reference[name].shape == (len(chips), reference[name].shape[1])
        assert np.abs(fast[name] - reference[name]).max() < TOLERANCE
    np.testing.assert_allclose(fast["age"].sum(axis=1), 1.0, atol=1e-5)
    # a chip's answer does not depend on what shares its batch
    alone = onnx.predict(chips[2:3])
    assert np.abs(alone["age"][0] - fast["age"][2]).max() < 1e-5


def test_no_chips_give_empty_arrays_of_each_heads_width(backbone):
    heads = load_heads(default_heads_path(backbone))
    outputs = create_runtime("onnx", backbone, heads).predict(np.zeros((0, 150, 150, 3), np.uint8))
    assert {name: value.shape for name, value in outputs.items()} == {"age": (0, 101), "gender": (0, 2), "race": (0, heads.model.output["race"].shape[-1])}


def test_analyzer_runs_onnx_by_default_and_answers_like_keras():
    from skimage import data

    fast, reference = Analyzer(detector="hog", upsample=0), Analyzer(detector="hog", upsample=0, runtime="keras")
    assert (fast.runtime.name, reference.runtime.name) == ("onnx", "keras")
    (face,), (same,) = fast.analyze(data.astronaut()), reference.analyze(data.astronaut())
    assert face["box"] == same["box"] and face["gender"] == same["gender"] and face["race"] == same["race"]
    assert abs(face["age"] - same["age"]) <= 0.1
    assert abs(face["gender_confidence"] - same["gender_confidence"]) <= 1e-3


def test_a_graph_that_no_longer_matches_its_model_is_refused(backbone):
    """The load-time check compares the graph with the Keras models: change a weight after
    the translation and it must notice."""
    heads = load_heads(default_heads_path(backbone, frozen=True))
    runtime = create_runtime("onnx", backbone, heads)
    layer = heads.model.get_layer("gender")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.array([3.0, -3.0], np.float32)])
    try:
        with pytest.raises(ExportError, match="differs from the Keras model .* in 'gender'"):
            runtime._check_against_keras([backbone.model, heads.model])
    finally:
        layer.set_weights([kernel, bias])


def test_unknown_layers_are_named_and_the_analyzer_falls_back_to_keras(backbone):
    import keras

    from face.analyzer import _runtime_for

    features = keras.Input((128,), name="features")
    hidden = keras.layers.LayerNormalization(name="odd_norm")(features)
    outputs = {name: keras.layers.Dense(width, activation="softmax", name=name)(hidden) for name, width in (("age", 101), ("gender", 2), ("race", 7))}
    model = keras.Model(features, outputs)
    with pytest.raises(ExportError, match="'odd_norm' of kind LayerNormalization"):
        export_onnx([backbone.model, model], (150, 150, 3), ["age", "gender", "race"])
    heads = TrainedHeads(model, {"backbone": {"backbone": "dlib-resnet-keras"}})
    assert _runtime_for(None, backbone, heads).name == "keras"
    with pytest.raises(ExportError):
        _runtime_for("onnx", backbone, heads)


def test_runtime_names_are_checked():
    assert list_runtimes() == ["keras", "onnx"]
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'; choose one of keras, onnx"):
        Analyzer(detector="hog", runtime="tensorrt")
    with pytest.raises(ConfigError, match="needs a Keras backbone"):
        Analyzer(backbone="dlib-resnet", detector="hog", runtime="onnx")


def _randomised_batch_norms(model, seed: int = 0) -> None:
    """Batch norms with made-up statistics, so that their translation is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i in (0, 3) else rng.normal(0, 0.1, w.shape).astype(np.float32) for i, w in enumerate(layer.get_weights())])


@pytest.mark.parametrize("name", ["vggface2-resnet50", "levi-hassner"])
def test_every_keras_backbone_translates(name):
    """The design backbone (its architecture, with random weights: the real file is not here)
    and the from-scratch one: 'same' padding, batch norm, Add, Flatten, Rescaling."""
    import keras

    from face.runtimes.onnx_runtime import create_session

    if name == "vggface2-resnet50":
        from face.backbones.vggface2_resnet50 import build_resnet50

        keras.utils.set_random_seed(0)
        model = build_resnet50(input_size=64)
    else:
        model = create_backbone(name).model
    _randomised_batch_norms(model)
    size = model.inputs[0].shape[1]
    chips = np.random.default_rng(1).uniform(-100, 150, (3, size, size, 3)).astype(np.float32)
    session = create_session(export_onnx([model], (size, size, 3), ["features"]).SerializeToString())
    (features,) = session.run(["features"], {"chips": chips})
    expected = np.asarray(model(chips, training=False))
    assert features.shape == expected.shape
    assert np.abs(features - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
