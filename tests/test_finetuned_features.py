"""Heads retrained on a fine-tuned model's features: the features are the ones its heads see,
and new heads go back onto the model layer for layer."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from face.backbones import create_backbone
from face.errors import WeightsError
from face.heads import HeadsConfig, build_heads, copy_head_weights
from face.model import load_heads, read_heads
from face.model_files import default_heads_path
from face.runtimes import create_runtime


@pytest.fixture(scope="module")
def shipped_path():
    return default_heads_path(create_backbone())


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    rng = np.random.default_rng(0)
    from conftest import astronaut_face
    import cv2

    face = cv2.resize(astronaut_face(), (150, 150), interpolation=cv2.INTER_AREA)
    noisy = np.clip(face.astype(np.int16) + rng.integers(-30, 30, (3, 150, 150, 3)), 0, 255).astype(np.uint8)
    return np.concatenate([face[None], face[None, :, ::-1], noisy])


def test_the_shipped_heads_on_its_features_answer_as_the_whole_model(shipped_path, chips):
    features = create_backbone("finetuned-features", weights=shipped_path)
    assert features.feature_size == 128 and features.chip == create_backbone().chip
    trained = load_heads(shipped_path)
    heads = build_heads(HeadsConfig(**trained.metadata["heads"]))
    copy_head_weights(trained.model, heads)
    outputs = heads.predict(features.embed(chips), verbose=0)
    whole = create_runtime("onnx", create_backbone(), read_heads(shipped_path)).predict(chips)
    for name in ("age", "gender", "race"):
        assert np.abs(np.asarray(outputs[name]) - whole[name]).max() < 1e-4, name


def test_new_heads_go_onto_the_model_and_come_back_out_unchanged(shipped_path):
    trained = load_heads(shipped_path)
    config = HeadsConfig(**trained.metadata["heads"])
    new = build_heads(config)  # freshly initialised: unlike the shipped heads
    copy_head_weights(new, trained.model)
    back = build_heads(config)
    copy_head_weights(trained.model, back)
    for layer in ("shared", "age", "race"):
        for mine, theirs in zip(new.get_layer(layer).get_weights(), back.get_layer(layer).get_weights()):
            assert np.array_equal(mine, theirs)
    with pytest.raises(WeightsError, match="shared"):
        copy_head_weights(trained.model, build_heads(HeadsConfig(**{**trained.metadata["heads"], "hidden_units": 64})))


def test_frozen_heads_or_a_model_without_its_export_are_refused(shipped_path, tmp_path):
    with pytest.raises(WeightsError, match="not a fine-tuned model"):
        create_backbone("finetuned-features", weights=default_heads_path(create_backbone(), frozen=True))
    copy = tmp_path / shipped_path.name
    shutil.copy(shipped_path, copy)
    metadata = json.loads(shipped_path.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps(metadata))  # its export is not beside the copy
    with pytest.raises(WeightsError, match="howold export"):
        create_backbone("finetuned-features", weights=copy)


def test_the_cache_fingerprint_covers_the_stages_and_not_the_heads(shipped_path):
    """New heads on the same stages keep the feature caches; changed stages do not."""
    import onnx
    from onnx import numpy_helper

    from face.backbones.finetuned_features import weights_below
    from face.model_files import onnx_export_of

    graph = onnx.load(str(onnx_export_of(read_heads(shipped_path)))).graph
    (first,) = [node for node in graph.node if node.op_type == "MatMul" and node.output[0].startswith("shared:")]
    features = first.input[0]
    before = weights_below(graph, features)
    initializers = {item.name: item for item in graph.initializer}

    producer = {output: node for node in graph.node for output in node.output}

    def bump(name: str) -> None:
        while name not in initializers:  # weights stored as float16 reach their layer through a Cast
            name = producer[name].input[0]
        values = numpy_helper.to_array(initializers[name]).copy()
        values.flat[0] += 1
        initializers[name].CopyFrom(numpy_helper.from_array(values, name))

    bump(first.input[1])  # the heads' first kernel
    assert weights_below(graph, features) == before
    bump(next(node.input[1] for node in graph.node if node.op_type == "Conv"))
    assert weights_below(graph, features) != before
