import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from face.backbones import DEFAULT_BACKBONE
from face.evaluation import evaluate_folder
from face.features import AugmentConfig
from face.heads import load_heads
from face.training import TrainConfig, train

from conftest import make_utkface_folder


def test_train_writes_heads_sidecar_logs_and_report(tiny_utkface, tmp_path):
    output = tmp_path / "weights" / "heads.keras"
    config = TrainConfig(
        data_dir=tiny_utkface, backbone="dlib-resnet", output=output, logs_dir=tmp_path / "logs", epochs=3, batch_size=8,
        validation_fraction=0.25, augment=AugmentConfig(views=2), progress=False, cache_root=tmp_path / "cache",
    )
    report = train(config)
    assert report["n"] == 6 and 0 <= report["gender_accuracy"] <= 1
    heads = load_heads(output)
    metadata = json.loads(output.with_suffix(".json").read_text())
    assert metadata["backbone"]["backbone"] == "dlib-resnet" and metadata["classes"]["race"][0] == "White"
    assert metadata["training"]["train_images"] == 18 and metadata["validation"]["n"] == 6
    assert heads.predict(np.zeros((1, 128), np.float32))["age"].shape == (1, 101)
    run = tmp_path / "logs" / "dlib-resnet"
    assert len(list(csv.DictReader((run / "history.csv").open()))) == 3
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))

    evaluation = evaluate_folder(tiny_utkface, tmp_path / "report.json", backbone="dlib-resnet", heads=output, progress=False)
    saved = json.loads((tmp_path / "report.json").read_text())
    for key in ("n", "age_mae", "age_cs5", "gender_accuracy", "race_accuracy", "by_race", "by_gender"):
        assert key in saved
    assert saved["n"] == 24 and set(saved["by_gender"]) == {"male", "female"}
    assert all(os.path.getsize(p) > 1000 for p in evaluation["plots"])


def test_killed_training_resumes_from_its_last_epoch(tmp_path):
    data = make_utkface_folder(tmp_path / "utk", 40, seed=3)
    command = [
        sys.executable, "-m", "face.cli", "train", "--data", str(data), "--output", str(tmp_path / "h.keras"),
        "--logs", str(tmp_path / "logs"), "--epochs", "400", "--batch-size", "4", "--views", "2",
    ]
    history = tmp_path / "logs" / DEFAULT_BACKBONE / "history.csv"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (not history.exists() or len(history.read_text().splitlines()) < 4):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(csv.DictReader(history.open())))
    assert finished >= 3, "training never got going"

    # run again with few epochs in all: it must resume after the finished ones, not start over
    resumed = subprocess.run(command[:-6] + ["--epochs", str(finished + 2), "--batch-size", "4", "--views", "2"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    epochs = [int(row["epoch"]) for row in csv.DictReader(history.open())]
    assert epochs[:finished] == list(range(finished))
    assert epochs[finished:] == [finished, finished + 1]
    assert (tmp_path / "h.keras").exists()
