"""TensorFlow and Keras, which only training, Keras backbones and un-exported models need.

`pip install howold` leaves them out (inference runs exported ONNX files); whatever needs
them asks `require_keras` first, which imports them (quietly, when the CLI asked for quiet
native logs) or raises one line naming what to install.
"""
from __future__ import annotations

import os
import sys

from .errors import HowoldError

TRAIN_EXTRA = 'pip install "howold[train]"'
#: Set by the CLI: import TensorFlow with its C++ start-up notices kept off stderr.
quiet = False


class MissingDependency(HowoldError):
    """A feature needs a package that is not installed; the message says what to install."""


def require_keras(why: str = "this needs Keras"):
    """keras, with TensorFlow as its backend, or MissingDependency naming the extra."""
    try:
        _import_tensorflow()
        import keras
    except ImportError as error:
        raise MissingDependency(f"{why}, and TensorFlow/Keras are not installed ({error.name or error}): {TRAIN_EXTRA}") from None
    return keras


def keras_available() -> bool:
    from importlib.util import find_spec

    return find_spec("keras") is not None and find_spec("tensorflow") is not None


def _import_tensorflow() -> None:
    """TensorFlow's C++ core writes its oneDNN and CPU-feature notices while it is imported,
    before any log setting applies: with `quiet`, stderr points at /dev/null meanwhile."""
    if "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None:
        return
    if not quiet:
        import tensorflow  # noqa: F401
        return
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
