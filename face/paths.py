"""Where howold keeps downloaded weights and feature caches, and what identifies a file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def howold_home() -> Path:
    """The cache folder: $HOWOLD_HOME, else ~/.howold. Created on demand."""
    home = Path(os.environ.get("HOWOLD_HOME", Path.home() / ".howold")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def feature_cache_dir() -> Path:
    path = howold_home() / "features"
    path.mkdir(parents=True, exist_ok=True)
    return path


def shipped_weights_dir() -> Path:
    """The folder of head weights that ship inside the package (the repo's `weights/`)."""
    from importlib.resources import files

    return Path(str(files("face.weights")))


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MB blocks: pinned downloads and model files are
    known by it."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
