"""The `howold` command as a user runs it: a clean terminal, and --crop for folders of face crops."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import astronaut_face


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL", "GLOG_minloglevel")}
    return subprocess.run([sys.executable, "-m", "face.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def noise_lines(stderr: str) -> list[str]:
    """Lines that are not howold's own one-line messages."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("howold:")]


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """A face crop and a crop without a face (scikit-image's coffee cup)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("crops")
    Image.fromarray(astronaut_face()).save(folder / "face.jpg")
    Image.fromarray(np.ascontiguousarray(data.coffee()[50:250, 150:350])).save(folder / "cup.png")
    return folder


def test_crop_mode_gives_each_image_exactly_one_face_and_a_clean_terminal(crops: Path, tmp_path: Path) -> None:
    result = run_cli("analyze", str(crops), "--crop", "--json", str(tmp_path / "out.json"), "--output-dir", str(tmp_path / "drawn"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert noise_lines(result.stderr) == []  # no TensorFlow, oneDNN, absl or OpenCV lines
    by_name = {Path(entry["source"]).name: entry for entry in json.loads((tmp_path / "out.json").read_text())}
    (face,) = by_name["face.jpg"]["faces"]
    assert face["detection_confidence"] > 0.5  # found by the detector inside the crop
    (cup,) = by_name["cup.png"]["faces"]
    assert cup["detection_confidence"] is None and cup["box"] == [0, 0, 200, 200]  # the whole image


def test_without_crop_the_cup_has_no_face(crops: Path) -> None:
    from face import Analyzer

    analyzer = Analyzer()
    cup = crops / "cup.png"
    assert analyzer.analyze(cup) == []
    assert [f["box"] for f in analyzer.analyze(cup, crop=True)] == [[0, 0, 200, 200]]
    with pytest.raises(ValueError, match="not both"):
        analyzer.analyze(cup, boxes=[(0, 0, 10, 10)], crop=True)


def test_verbose_lets_tensorflow_speak(tmp_path: Path) -> None:
    """(Without --verbose the terminal is clean: test_crop_mode_gives_each_image_exactly_one_face_and_a_clean_terminal.)
    The exported ONNX model loads no TensorFlow: the Keras runtime does."""
    verbose = run_cli("demo", "--verbose", "--runtime", "keras", "--output-dir", str(tmp_path), cwd=tmp_path)
    assert verbose.returncode == 0
    assert noise_lines(verbose.stderr), "with --verbose, TensorFlow's own notices are not hidden"


def test_runtime_option_reaches_the_analyzer_and_is_checked(capsys) -> None:
    from face.cli import _analyzer_options, build_parser

    parser = build_parser()
    for command in ("analyze", "demo", "video"):
        inputs = {"analyze": ["x.jpg"], "demo": [], "video": ["clip.mp4"]}[command]
        assert _analyzer_options(parser.parse_args([command, *inputs, "--runtime", "keras"]))["runtime"] == "keras"
        assert _analyzer_options(parser.parse_args([command, *inputs]))["runtime"] is None  # onnx where the model translates
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "x.jpg", "--runtime", "tensorrt"])
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err


def test_flip_is_the_default_and_none_turns_it_off() -> None:
    from face.cli import _analyzer_options, build_parser

    parser = build_parser()
    for command, inputs in (("analyze", ["x.jpg"]), ("demo", []), ("video", ["clip.mp4"])):
        assert _analyzer_options(parser.parse_args([command, *inputs]))["tta"] == ("flip",)
        assert _analyzer_options(parser.parse_args([command, *inputs, "--tta", "none"]))["tta"] == ()
        assert _analyzer_options(parser.parse_args([command, *inputs, "--tta", "oversample"]))["tta"] == ("oversample",)
        assert _analyzer_options(parser.parse_args([command, *inputs, "--tta", "flip", "--tta", "oversample"]))["tta"] == ("flip", "oversample")
        assert _analyzer_options(parser.parse_args([command, *inputs]))["age_readout"] == "default"
        assert _analyzer_options(parser.parse_args([command, *inputs, "--age-readout", "least-error"]))["age_readout"] == "least-error"


def test_a_reader_that_goes_away_ends_the_demo_without_a_traceback(tmp_path):
    """`howold demo | head -1`: the pipe closes before the JSON is written."""
    process = subprocess.Popen([sys.executable, "-m", "face.cli", "demo", "--output-dir", str(tmp_path)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # nobody reads: the first write fails with EPIPE
    stderr = process.stderr.read()
    assert process.wait(timeout=600) == 141, stderr
    assert "Traceback" not in stderr, stderr
