"""The light inference path: the shipped model's exported ONNX file runs without TensorFlow
or Keras, answers as the Keras model does, and is the export of the shipped `.keras`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from face.backbones import create_backbone
from face.cli_tasks import demo_image
from face.model import TrainedHeads, read_heads
from face.model_files import default_heads_path, file_sha256, onnx_export_of, sidecar_path
from face.onnx_export import MAX_FILE_BYTES
from face.runtimes import create_runtime

ROOT = Path(__file__).resolve().parents[1]
UTKFACE = ROOT.parent / "shared" / "data" / "utkface"
OBAMA = ROOT.parent / "shared" / "demo" / "obama_family_2011.jpg"
#: float16 storage of the fine-tuned weights, and ONNX Runtime's own rounding
FLOAT16_TOLERANCE = 1e-3
#: Blocks TensorFlow and Keras in a fresh interpreter: importing either raises ImportError.
WITHOUT_TENSORFLOW = "import sys; sys.modules.update(tensorflow=None, keras=None); "
#: ... and dlib's model files (the "dlib" extra), as in `pip install howold`.
PLAIN_INSTALL = "import sys; sys.modules.update(tensorflow=None, keras=None, face_recognition_models=None); "


def _run(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("dlib-resnet-keras")


@pytest.fixture(scope="module")
def shipped(backbone) -> TrainedHeads:
    return read_heads(default_heads_path(backbone))


def bundled_faces() -> list[np.ndarray]:
    """Real faces that need no data folder: the astronaut howold ships for its demo and
    scikit-image's cameraman, each as it is, mirrored, and turned 12 degrees either way."""
    from PIL import Image
    from skimage import data

    photos = [demo_image(), np.stack([data.camera()] * 3, axis=-1)]
    views = []
    for photo in photos:
        image = Image.fromarray(photo)
        views += [photo, photo[:, ::-1]] + [np.asarray(image.rotate(angle, resample=Image.BILINEAR)) for angle in (-12, 12)]
    return [np.ascontiguousarray(view) for view in views]


@pytest.fixture(scope="module")
def real_chips() -> np.ndarray:
    """Aligned chips of real faces: 24 of UTKFace's and the demo photo's where they are here,
    and always the bundled ones (`bundled_faces`)."""
    from face import Analyzer
    from face.images import load_image

    analyzer = Analyzer()
    sources = sorted(UTKFACE.glob("*.jpg"))[:24] if UTKFACE.is_dir() else []
    images = [load_image(source) for source in sources + ([OBAMA] if OBAMA.is_file() else [])] + bundled_faces()
    return np.concatenate([analyzer.chips(image, found) for image in images if (found := analyzer.detect(image))])


def test_the_shipped_onnx_file_is_the_export_of_the_shipped_keras(shipped):
    entry = shipped.metadata["onnx"]
    folder = shipped.path.parent
    assert entry["keras_sha256"] == file_sha256(shipped.path)
    assert entry["sha256"] == file_sha256(folder / entry["file"])
    if "data" in entry:
        assert entry["data_sha256"] == file_sha256(folder / entry["data"])
    for name in (entry["file"], entry.get("data")):
        if name:
            assert (folder / name).stat().st_size <= MAX_FILE_BYTES
    assert onnx_export_of(shipped) == folder / entry["file"]


def test_the_onnx_file_answers_as_the_keras_model_on_real_chips(backbone, shipped, real_chips):
    light = create_runtime("onnx", backbone, shipped)
    assert light.model_path is not None
    keras = create_runtime("keras", backbone, read_heads(shipped.path))
    fast, reference = light.predict(real_chips, batch_size=8), keras.predict(real_chips, batch_size=8)
    assert len(real_chips) >= 8  # the bundled faces' views at least
    for name in ("age", "gender", "race"):
        assert fast[name].shape == reference[name].shape
        assert np.abs(fast[name] - reference[name]).max() < FLOAT16_TOLERANCE, name


def test_the_light_path_answers_as_the_graph_translated_at_load(backbone, shipped, real_chips):
    """Every probability within 1e-3 of the graph the runtime translated from Keras at load."""
    translated = TrainedHeads(None, {k: v for k, v in shipped.metadata.items() if k != "onnx"}, shipped.path)
    assert onnx_export_of(translated) is None
    before = create_runtime("onnx", backbone, translated)
    assert before.model_path is None
    light = create_runtime("onnx", backbone, shipped).predict(real_chips)
    today = before.predict(real_chips)
    for name in ("age", "gender", "race"):
        assert np.abs(light[name] - today[name]).max() <= 1e-3, name


def test_analysing_a_photo_imports_neither_tensorflow_nor_keras(tmp_path):
    code = (
        "import sys; from face import Analyzer; from face.cli_tasks import demo_image; "
        "analyzer = Analyzer(); faces = analyzer.analyze(demo_image()); "
        "print(len(faces), analyzer.runtime.name, sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'h5py', 'tensorboard'}))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "onnx", "[]"]


@pytest.mark.parametrize("command", ["analyze", "demo", "ray-actor"])
def test_inference_commands_run_with_tensorflow_and_keras_unimportable(tmp_path, command):
    photo = OBAMA if OBAMA.is_file() else tmp_path / "astronaut.png"
    if not OBAMA.is_file():
        shutil.copy(ROOT / "face" / "assets" / "astronaut.png", photo)
    if command == "ray-actor":  # what each actor of the Ray engine runs
        code = PLAIN_INSTALL + (
            "import json; from face.engines.ray import AnalyzeBatch; import numpy as np; "
            "batch = AnalyzeBatch({}, 4, False)({'source': np.array([sys.argv[1]], dtype=object)}); "
            "print(len(json.loads(batch['result'][0])['faces']))"
        )
        result = _run(code, str(photo))
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) >= 1
        return
    argv = ["analyze", str(photo), "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "out")] if command == "analyze" else ["demo", "--output-dir", str(tmp_path / "out")]
    result = _run(PLAIN_INSTALL + "from face.cli import main; sys.exit(main(sys.argv[1:]))", *argv)
    assert result.returncode == 0, result.stderr
    if command == "analyze":
        assert json.loads((tmp_path / "out.json").read_text())[0]["faces"]


@pytest.mark.parametrize("argv", [["train", "--data", "nowhere"], ["analyze", "x.jpg", "--runtime", "keras"], ["evaluate", "--data", "nowhere"]], ids=["train", "runtime keras", "evaluate"])
def test_without_tensorflow_what_needs_it_fails_with_one_line_naming_the_extra(tmp_path, argv):
    photo = tmp_path / "x.jpg"
    shutil.copy(ROOT / "face" / "assets" / "astronaut.png", photo)
    result = _run(WITHOUT_TENSORFLOW + "from face.cli import main; sys.exit(main(sys.argv[1:]))", *argv, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("howold: error:") and 'pip install "howold[train]"' in lines[0], result.stderr


def test_without_dlibs_model_files_what_needs_them_fails_with_one_line_naming_the_extra(tmp_path):
    """The cnn detector's file comes with the dlib extra; given boxes (dlib's shipped shape
    predictor) work without it."""
    photo = tmp_path / "astronaut.png"
    shutil.copy(ROOT / "face" / "assets" / "astronaut.png", photo)
    result = _run(PLAIN_INSTALL + "from face.cli import main; sys.exit(main(sys.argv[1:]))", "analyze", str(photo), "--detector", "cnn")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert 'pip install "howold[dlib]"' in result.stderr
    code = PLAIN_INSTALL + "from face import Analyzer; print(len(Analyzer().analyze(sys.argv[1], boxes=[[150, 50, 300, 250]])))"
    result = _run(code, str(photo))
    assert result.stdout.split() == ["1"], result.stderr


def test_a_model_without_an_export_still_runs_by_translation(backbone, tmp_path):
    """The frozen heads have no ONNX file: runtime onnx translates them (TensorFlow installed)."""
    frozen = read_heads(default_heads_path(backbone, frozen=True))
    assert onnx_export_of(frozen) is None
    runtime = create_runtime("onnx", backbone, frozen)
    assert runtime.model_path is None
    assert runtime.predict(np.zeros((2, 150, 150, 3), np.uint8))["race"].shape[0] == 2


def test_export_writes_a_file_the_analyzer_then_uses_and_a_changed_model_is_not_answered_from_it(backbone, tmp_path, real_chips):
    from face.cli import main

    source = default_heads_path(backbone, frozen=True)
    heads_path = tmp_path / "mine.keras"
    shutil.copy(source, heads_path)
    shutil.copy(sidecar_path(source), sidecar_path(heads_path))
    assert main(["export", str(heads_path)]) == 0
    exported = read_heads(heads_path)
    assert onnx_export_of(exported) == tmp_path / "mine.onnx"
    light = create_runtime("onnx", backbone, exported)
    assert light.model_path == tmp_path / "mine.onnx"
    reference = create_runtime("keras", backbone, read_heads(heads_path)).predict(real_chips)
    answers = light.predict(real_chips)
    for name in ("age", "gender", "race"):
        assert np.abs(answers[name] - reference[name]).max() < FLOAT16_TOLERANCE
    with heads_path.open("ab") as handle:  # the model changes after its export
        handle.write(b"\0")
    assert onnx_export_of(read_heads(heads_path)) is None


def test_saving_a_model_exports_it_beside_itself(tmp_path):
    """`howold train` saves through save_heads, which writes the ONNX file too."""
    from face.heads import HeadsConfig, build_heads, save_heads

    model = build_heads(HeadsConfig(feature_size=128))
    path = save_heads(model, tmp_path / "trained.keras", {"backbone": {"backbone": "dlib-resnet-keras", "feature_size": 128}})
    heads = read_heads(path)
    assert onnx_export_of(heads) == tmp_path / "trained.onnx"
    chips = np.stack([demo_image()[100:250, 150:300]] * 2)
    light = create_runtime("onnx", create_backbone("dlib-resnet-keras"), heads).predict(chips)
    assert light["age"].shape == (2, 101) and np.allclose(light["gender"].sum(axis=1), 1.0, atol=1e-5)


def test_serve_gets_ready_and_answers_with_tensorflow_and_keras_unimportable(tmp_path):
    """A real `howold serve` on 127.0.0.1 in a process that cannot import TensorFlow or Keras."""
    import socket
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = PLAIN_INSTALL + "from face.cli import main; sys.exit(main(sys.argv[1:]))"
    server = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port)], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
                    health = json.loads(response.read())
                    break
            except urllib.error.HTTPError as error:  # 503 while loading, or failed
                assert json.loads(error.read())["status"] == "loading"
                assert time.monotonic() < deadline, "not ready within 300 s"
                time.sleep(0.2)
            except OSError:  # refused while starting
                assert time.monotonic() < deadline, "not ready within 300 s"
                time.sleep(0.2)
        assert health["status"] == "ready"
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/analyze", data=(ROOT / "face/assets/astronaut.png").read_bytes(), headers={"content-type": "image/png"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        assert len(answer["faces"]) == 1 and answer["faces"][0]["gender"] == "female"
    finally:
        server.terminate()
        server.wait(30)
