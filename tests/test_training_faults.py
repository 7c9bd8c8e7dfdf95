"""Training on a disk that fills up: a real small filesystem (tmpfs, mounted by the test), grown
between runs as a user would free space. Skipped where mounting is not permitted (not root)."""
import csv
import errno
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from face.data import load_dataset
from face.features import AugmentConfig, extract_features

from conftest import make_utkface_folder
from test_features import CountingDlibResNet


class SmallDisk:
    """A tmpfs of a given size at `path`; `resize` grows (or shrinks) it in place."""

    def __init__(self, path, size: str):
        self.path = path
        path.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
        if mounted.returncode:
            pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size: str) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size))
        return disks[-1]

    yield make
    for disk in disks:
        disk.unmount()


def partial_files(folder) -> list[str]:
    return [p.name for p in folder.rglob(".partial-*")]


def test_full_disk_while_caching_keeps_the_finished_chunks(tiny_utkface, small_disk):
    """16 KiB: meta.json and the first chunk (4,224 bytes, 2 pages) fit, the second does not.
    The failed chunk leaves no file; after space is freed only the missing chunks are computed."""
    dataset = load_dataset(tiny_utkface)
    config = AugmentConfig(views=2)
    disk = small_disk("16k")
    backbone = CountingDlibResNet()
    CountingDlibResNet.embedded = 0
    with pytest.raises(OSError) as failure:
        extract_features(backbone, dataset, config, cache_root=disk.path, chunk_size=8, progress=False)
    assert failure.value.errno == errno.ENOSPC and failure.value.filename.endswith("chunk_0000008_0000016.npy")
    assert str(failure.value) == f"[Errno 28] No space left on device: '{failure.value.filename}'"  # one line
    (cache,) = list(disk.path.iterdir())
    assert sorted(p.name for p in cache.iterdir()) == ["chunk_0000000_0000008.npy", "meta.json"]  # no partial file
    first = cache / "chunk_0000000_0000008.npy"
    kept = first.stat().st_ino, first.stat().st_mtime_ns
    assert CountingDlibResNet.embedded == 16 * 2  # two chunks computed, the second not written

    disk.resize("1m")
    features = extract_features(backbone, dataset, config, cache_root=disk.path, chunk_size=8, progress=False)
    assert CountingDlibResNet.embedded == 16 * 2 + 16 * 2  # the second and third chunks only
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == kept
    whole = extract_features(CountingDlibResNet(), dataset, config, cache_root=tiny_utkface.parent / "cache", chunk_size=8, progress=False)
    assert np.allclose(features, whole, atol=1e-3) and partial_files(disk.path) == []


def saved_size(heads_config) -> int:
    """About the bytes of a checkpoint of these heads: float32 weights and Adam's two moments."""
    from face.heads import build_heads

    return 3 * 4 * build_heads(heads_config).count_params()


def epochs_logged(run) -> list[int]:
    return [int(row["epoch"]) for row in csv.DictReader((run / "history.csv").open())]


def one_line_error(capsys) -> str:
    return _one_line(capsys.readouterr().err)


def one_line_error_of(process: subprocess.CompletedProcess, status: int) -> str:
    """The one error line of a finished `howold` process, which ended with `status` (not a crash)."""
    assert process.returncode == status, process.stderr[-3000:]
    return _one_line(process.stderr)


def _one_line(err: str) -> str:
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not re.search(r"\| *\d+/\d+ \[", line)]  # not progress bars
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    return lines[0]


def test_howold_train_on_a_filling_disk_fails_in_one_line_and_resumes(tmp_path, small_disk, monkeypatch, capsys):
    """The feature cache and the run's logs on one small disk, as `howold train` writes them:
    first the cache does not fit (exit 1), then, given 2 checkpoints' worth, the second epoch's
    checkpoint does not (exit 1, the first epoch backed up); then the run finishes, resuming at
    the second epoch, the cache not computed again, history.csv one row per epoch."""
    from face.cli import main
    from face.heads import HeadsConfig

    data = make_utkface_folder(tmp_path / "utk", 24, seed=3)
    disk = small_disk("16k")  # meta.json and not the 12 KiB chunk of 24 images x 2 views
    monkeypatch.setenv("HOWOLD_HOME", str(disk.path / "home"))
    output, run = tmp_path / "h.keras", disk.path / "logs" / "dlib-resnet"
    command = ["train", "--data", str(data), "--output", str(output), "--logs", str(disk.path / "logs"), "--batch-size", "8", "--views", "2", "--backbone", "dlib-resnet", "--epochs", "3"]

    assert main(command) == 1
    line = one_line_error(capsys)
    assert line.startswith("howold: error: cannot write ") and "chunk_0000000_0000024.npy: No space left on device;" in line
    assert line.endswith("free some space and run the same command again to resume")
    assert not list(disk.path.rglob("chunk_*.npy")) and partial_files(disk.path) == []

    checkpoint = saved_size(HeadsConfig(feature_size=128))  # ~5.9 MB; the backup holds as much
    disk.resize(str(2 * checkpoint + 1_000_000))
    assert main(command) == 1
    line = one_line_error(capsys)
    assert line.startswith(f"howold: error: cannot write {run}/") and "No space left on device" in line, line
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert epochs_logged(run)[:1] == [0] and not output.exists() and partial_files(disk.path) == []
    (chunk,) = disk.path.rglob("chunk_*.npy")
    cached = chunk.stat().st_ino, chunk.stat().st_mtime_ns

    disk.resize("64m")
    assert main(command) == 0
    capsys.readouterr()
    assert epochs_logged(run) == [0, 1, 2]
    assert (chunk.stat().st_ino, chunk.stat().st_mtime_ns) == cached
    assert output.exists() and not (run / "fitted.json").exists() and partial_files(disk.path) == []


def test_heads_saved_after_fitting_on_a_full_disk_are_not_fitted_again(tmp_path, small_disk, capsys):
    """The fit finished but the heads' own file did not fit: the rerun saves the best epoch's
    heads without fitting again (Keras's backup is gone by then: it would start over)."""
    from face.cli import main

    data = make_utkface_folder(tmp_path / "utk", 24, seed=3)
    weights = small_disk("64k")  # the heads' .keras (~2 MB) does not fit
    output, run = weights.path / "h.keras", tmp_path / "logs" / "dlib-resnet"
    command = ["train", "--data", str(data), "--output", str(output), "--logs", str(tmp_path / "logs"), "--batch-size", "8", "--views", "2", "--backbone", "dlib-resnet", "--epochs", "2"]
    assert main(command) == 1
    assert "No space left on device" in one_line_error(capsys)
    assert epochs_logged(run) == [0, 1] and (run / "fitted.json").exists()
    best = (run / "best.keras").stat().st_mtime_ns
    weights.resize("16m")
    assert main(command) == 0
    assert "Epoch 1/2" not in capsys.readouterr().out
    assert epochs_logged(run) == [0, 1] and (run / "best.keras").stat().st_mtime_ns == best
    assert output.exists() and not (run / "fitted.json").exists()


def test_unfreezing_on_a_filling_disk_resumes_by_chunk_and_epoch(tmp_path, small_disk):
    """`howold train --unfreeze 1` as a user runs it (its own process: the exit status is the
    process's), the caches on one small disk, the logs on another and the phase's checkpoints on a
    third: the level-4 boundary cache does not fit, then the phase's second checkpoint does not;
    each time exit 1 and one line. The third run finishes the phase from its first backed-up
    epoch, without computing the cache or the frozen heads it started from again."""
    from face.backbones import create_backbone
    from face.heads import HeadsConfig, build_heads
    from face.unfreezing import phase_model

    data = make_utkface_folder(tmp_path / "utk", 16, seed=5)
    caches, logs, checkpoints = small_disk("64k"), small_disk("64m"), small_disk("64m")  # the 16 x 2 x 8 KiB boundary chunk does not fit
    environment = {**os.environ, "HOWOLD_HOME": str(caches.path)}
    output, run = tmp_path / "ft.keras", logs.path / "ft" / "unfreeze-1"
    run.parent.mkdir()
    run.symlink_to(checkpoints.path, target_is_directory=True)
    command = [
        sys.executable, "-m", "face.cli", "train", "--data", str(data), "--output", str(output), "--logs", str(logs.path), "--run-name", "ft",
        "--batch-size", "8", "--views", "2", "--unfreeze", "1", "--unfreeze-epochs", "3",
    ]
    line = one_line_error_of(subprocess.run(command, capture_output=True, text=True, env=environment), 1)
    assert "dlib-resnet-keras-level4-" in line and "chunk_0000000_0000016.npy: No space left on device;" in line, line
    # one pass over the images fills the frozen heads' features and the boundary: nothing trained yet
    assert partial_files(caches.path) == [] and not (logs.path / "ft" / "frozen_heads.keras").exists()

    backbone = create_backbone("dlib-resnet-keras")
    model, _ = phase_model(backbone, "level4", build_heads(HeadsConfig(feature_size=128)))
    checkpoint = 4 * (sum(int(np.prod(v.shape)) for v in model.weights) + 2 * sum(int(np.prod(v.shape)) for v in model.trainable_variables))
    caches.resize("16m")
    checkpoints.resize(str(shutil.disk_usage(checkpoints.path).used + int(2.5 * checkpoint)))  # the best and the backup of one epoch, not a third file
    line = one_line_error_of(subprocess.run(command, capture_output=True, text=True, env=environment), 1)
    assert line.startswith(f"howold: error: cannot write {run}/") and "No space left on device" in line, line
    assert (logs.path / "ft" / "frozen_heads.keras").exists()  # trained on the frozen backbone first
    frozen_epochs = epochs_logged(logs.path / "ft" / "heads")
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert not (run / "done.json").exists() and partial_files(logs.path) == [] and partial_files(checkpoints.path) == []
    (chunk,) = caches.path.rglob("*level4*/chunk_*.npy")
    cached = chunk.stat().st_ino, chunk.stat().st_mtime_ns

    checkpoints.resize("512m")
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert epochs_logged(run) == [0, 1, 2]
    assert (chunk.stat().st_ino, chunk.stat().st_mtime_ns) == cached
    assert epochs_logged(logs.path / "ft" / "heads") == frozen_epochs  # not trained again
    assert json.loads((run / "done.json").read_text())["epochs"] == 3 and output.exists()
