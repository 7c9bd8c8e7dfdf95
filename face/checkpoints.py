"""Training runs that survive a kill and a full disk: Keras callbacks that resume at the last
finished epoch and write their files whole or not at all, history.csv kept to the epochs
the backup holds, and write failures as one line that says the same command resumes.

Why apart: `howold train` and progressive unfreezing run their epochs the same way.
"""
from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import WRITE_ERRNOS, replacing
from .errors import WriteError
from .heads import save_heads


def run_callbacks(run_dir: Path, patience: int, best_path: Path) -> list:
    """Resume after a kill, keep the best epoch (weights only for a .weights.h5 path), stop when
    stuck, log to CSV and TensorBoard.

    The backup is written last in each epoch, after the epoch's CSV row: a run killed between
    the two redoes that epoch, and the CSV rows of epochs the backup does not hold are dropped
    before the CSV logger appends, so history.csv keeps exactly one row per epoch. The best
    model and the backup are written whole or not at all (a full disk leaves the last good ones).
    """
    import keras

    run_dir.mkdir(parents=True, exist_ok=True)
    trim_history(run_dir / "history.csv", run_dir / "backup")
    checkpoint, backup = atomic_callbacks()
    return [
        checkpoint(str(best_path), monitor="val_loss", save_best_only=True, save_weights_only=best_path.name.endswith(".weights.h5")),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False),
        # last: its on_train_begin restores (fit reads the epoch after every callback's), and
        # its on_epoch_end backs up an epoch only once that epoch is logged
        backup(str(run_dir / "backup")),
    ]


def atomic_callbacks() -> tuple[type, type]:
    """Keras's ModelCheckpoint and BackupAndRestore, writing their files whole or not at all.

    Keras writes both in place: a full disk mid-write leaves a torn best model (which the end of
    training then fails to load) or a torn backup whose epoch file is empty (the rerun fails to
    read it). Here each file goes to a partial file renamed over the old one when complete; the
    backup's epoch file and weights are both written before either is renamed, so they always
    agree. Keras's double checkpoint (a copy of the previous backup) is not needed then.
    """
    import keras

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            final = self.filepath
            with replacing(final) as partial:
                self.filepath = str(partial)
                try:
                    super()._save_model(epoch, batch, logs)
                finally:
                    self.filepath = final

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            os.makedirs(self.backup_dir, exist_ok=True)
            state = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})
            with replacing(self._training_metadata_path) as metadata, replacing(self._weights_path) as weights:
                metadata.write_text(state)
                self.model.save_weights(str(weights), overwrite=True)

    return AtomicModelCheckpoint, AtomicBackupAndRestore


def save_named(model, path: Path, metadata: dict) -> None:
    """heads.save_heads, its write failures naming the file (Keras's zip writer does not)."""
    try:
        save_heads(model, path, metadata)
    except OSError as error:
        if error.filename or error.errno is None:
            raise
        raise OSError(error.errno, os.strerror(error.errno), str(path)) from None


@contextmanager
def resumable_writes() -> Iterator[None]:
    """A write that fails for want of space or permission (atomic.WRITE_ERRNOS) becomes a
    one-line WriteError naming the file and saying that the same command resumes."""
    try:
        yield
    except OSError as error:
        if error.errno not in WRITE_ERRNOS:
            raise
        what = error.filename or "a training file (cache, checkpoint or log)"
        fix = "free some space" if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "make it writable"
        raise WriteError(
            f"cannot write {what}: {os.strerror(error.errno)}; the cached features and finished epochs are kept: {fix} and run the same command again to resume"
        ) from None


def trim_history(history: Path, backup: Path) -> None:
    """Keep only the rows of history.csv for epochs that Keras's backup in `backup` has finished."""
    metadata = backup / "training_metadata.json"  # BackupAndRestore's {"epoch": epochs finished, ...}
    if not (metadata.is_file() and history.is_file()):
        return
    finished = int(json.loads(metadata.read_text())["epoch"])
    header, *rows = history.read_text().splitlines(keepends=True) or [""]

    def kept(row: str) -> bool:
        epoch = row.split(",", 1)[0]
        return row.endswith("\n") and epoch.isdigit() and int(epoch) < finished  # (a cut-off last row goes too)

    if not all(kept(row) for row in rows):
        history.write_text(header + "".join(row for row in rows if kept(row)))
