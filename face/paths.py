"""Where howold keeps downloaded weights and feature caches."""
from __future__ import annotations

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
