"""TensorFlow and Keras, which only training, Keras backbones and un-exported models need.

`pip install howold` leaves them out (inference runs exported ONNX files); whatever needs
them asks `require_keras` first, which imports them (quietly, when the CLI asked for quiet
native logs) or raises one line naming what to install.
"""
from __future__ import annotations

import sys

from .errors import HowoldError

TRAIN_EXTRA = 'pip install "howold[train]"'


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
    """TensorFlow, imported with its C++ start-up notices dropped and its Python loggers and
    Keras's warnings held back when the CLI asked for quiet native logs (`face.native_logs`)."""
    from . import native_logs

    if sys.modules.get("tensorflow") is not None:
        return
    native_logs.quiet_import("tensorflow")
    if not native_logs.quiet_mode:
        return
    import logging
    import warnings

    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="keras")
