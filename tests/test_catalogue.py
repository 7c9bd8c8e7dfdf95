"""Models chosen by name: the shipped ones, a user's own in $HOWOLD_HOME/models, and what a
broken or clashing model file says (face.catalogue, Analyzer(model=...), howold models, --model)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from face import list_models
from face.catalogue import DEFAULT_MODEL, find_model, resolve_model, user_models_dir
from face.errors import ConfigError, WeightsError
from face.paths import shipped_weights_dir

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "face" / "assets" / "astronaut.png"


def add_user_model(name: str, source: str = "dlib-resnet") -> Path:
    """A copy of a shipped model (its .keras and its sidecar) as the user's model `name`."""
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.keras"
    shutil.copyfile(shipped_weights_dir() / f"{source}.keras", target)
    shutil.copyfile(shipped_weights_dir() / f"{source}.json", target.with_suffix(".json"))
    return target


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "face.cli", *args], cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=600)


def test_the_shipped_models_with_their_backbone_default_and_figures():
    models = {entry.name: entry for entry in list_models()}
    assert {"dlib-resnet-keras-finetuned", "dlib-resnet"} <= set(models)
    assert [name for name, entry in models.items() if entry.default] == [DEFAULT_MODEL]
    for entry in models.values():
        assert entry.shipped and entry.path.is_file() and entry.backbone == "dlib-resnet-keras"
    sidecar = json.loads((shipped_weights_dir() / "dlib-resnet.json").read_text())["validation"]
    assert models["dlib-resnet"].figures == {"dataset": None, "age_mae": sidecar["age_mae"], "gender_accuracy": sidecar["gender_accuracy"]}
    finetuned = json.loads((shipped_weights_dir() / f"{DEFAULT_MODEL}.json").read_text())["validation"]["datasets"]["utkface"]
    assert models[DEFAULT_MODEL].figures == {"dataset": "utkface", "age_mae": finetuned["age_mae"], "gender_accuracy": finetuned["gender_accuracy"]}


def test_the_default_model_is_what_an_analyzer_reads_with_by_default():
    from face.backbones import create_backbone
    from face.model_files import default_heads_path

    assert default_heads_path(create_backbone()).stem == DEFAULT_MODEL


def test_a_name_or_a_path_resolves_to_heads_and_backbone():
    path, backbone = resolve_model("dlib-resnet")
    assert path == shipped_weights_dir() / "dlib-resnet.keras" and backbone == "dlib-resnet-keras"
    assert resolve_model(str(path)) == (path, backbone)
    assert resolve_model(path) == (path, backbone)


def test_an_unknown_name_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'no-such'; choose one of dlib-resnet-keras-finetuned, dlib-resnet"):
        resolve_model("no-such")
    with pytest.raises(ConfigError, match="a model is a .keras file"):
        resolve_model(str(shipped_weights_dir() / "dlib-resnet.json"))
    with pytest.raises(WeightsError, match="no such heads file"):
        resolve_model("/nowhere/model.keras")


def test_a_user_model_is_found_listed_and_analysed_with():
    from face import Analyzer

    path = add_user_model("my-heads")
    entry = find_model("my-heads")
    assert (entry.path, entry.backbone, entry.shipped, entry.default) == (path, "dlib-resnet-keras", False, False)
    assert [e.name for e in list_models()][-1] == "my-heads"
    assert entry.figures == find_model("dlib-resnet").figures  # its sidecar's figures
    mine = Analyzer(model="my-heads", tta=())
    assert mine.model_name == "my-heads" and mine.heads.path == path
    shipped = Analyzer(model="dlib-resnet", tta=())
    assert mine.analyze(str(ASTRONAUT)) == shipped.analyze(str(ASTRONAUT))  # the same weights
    assert [line["model"] for line in mine.analyze_many([str(ASTRONAUT)])] == [shipped.model_id]


def test_model_and_heads_or_backbone_that_disagree_are_refused():
    from face import Analyzer

    with pytest.raises(ConfigError, match="give the model or the heads, not both"):
        Analyzer(model="dlib-resnet", heads=shipped_weights_dir() / f"{DEFAULT_MODEL}.keras")
    with pytest.raises(ConfigError, match="trained on backbone 'dlib-resnet-keras', not 'vggface2-facenet'"):
        Analyzer(model="dlib-resnet", backbone="vggface2-facenet")
    agreeing = Analyzer(model="dlib-resnet", heads=shipped_weights_dir() / "dlib-resnet.keras", backbone="dlib-resnet-keras", tta=())
    assert agreeing.model_name == "dlib-resnet"


@pytest.mark.parametrize(
    "sidecar, words",
    [
        ("{not json", "missing or unreadable sidecar"),
        (None, "missing or unreadable sidecar"),
        ('{"classes": {}}', "names no backbone"),
    ],
)
def test_a_bad_sidecar_is_one_clear_line(tmp_path, sidecar, words):
    path = add_user_model("broken")
    if sidecar is None:
        path.with_suffix(".json").unlink()
    else:
        path.with_suffix(".json").write_text(sidecar)
    with pytest.raises(WeightsError, match=words):
        list_models()
    result = run_cli("models", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("howold: error: ") and "broken.json" in result.stderr and words in result.stderr


def test_a_user_model_with_a_shipped_name_is_refused(tmp_path):
    add_user_model("dlib-resnet", source=DEFAULT_MODEL)
    with pytest.raises(ConfigError, match="a shipped model is called 'dlib-resnet' already; rename the file"):
        resolve_model("dlib-resnet")
    result = run_cli("analyze", str(ASTRONAUT), "--model", "dlib-resnet", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "rename the file" in result.stderr


def test_howold_models_lists_name_backbone_default_and_figures(tmp_path):
    add_user_model("my-heads")
    result = run_cli("models", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{DEFAULT_MODEL} (default)  backbone dlib-resnet-keras  validation on utkface: age MAE ")
    plain = next(line for line in lines if line.startswith("dlib-resnet "))
    figures = find_model("dlib-resnet").figures
    assert f"age MAE {figures['age_mae']:.2f}, gender {figures['gender_accuracy']:.1%}" in plain and "(default)" not in plain
    assert lines[-1].startswith("my-heads  backbone dlib-resnet-keras") and str(user_models_dir() / "my-heads.keras") in lines[-1]


def test_howold_analyze_with_a_model_by_name(tmp_path):
    from face.model import read_heads
    from face.model_files import heads_id

    output = tmp_path / "results.jsonl"
    result = run_cli("analyze", str(ASTRONAUT), "--model", "dlib-resnet", "--output", str(output), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(text) for text in output.read_text().splitlines()]
    assert line["model"] == heads_id(read_heads(shipped_weights_dir() / "dlib-resnet.keras"))
    assert len(line["faces"]) == 1 and line["faces"][0]["gender"] == "female"
    default = run_cli("analyze", str(ASTRONAUT), "--output", str(tmp_path / "default.jsonl"), cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "default.jsonl").read_text())["model"] != line["model"]

    unknown = run_cli("analyze", str(ASTRONAUT), "--model", "no-such", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "unknown model 'no-such'; choose one of dlib-resnet-keras-finetuned, dlib-resnet" in unknown.stderr
