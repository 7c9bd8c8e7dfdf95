"""Native libraries' own log lines kept off the terminal, so that a howold command prints only
howold's lines (and progress bars); `--verbose` lets them through.

Why each measure, as measured with TensorFlow 2.21 and ONNX Runtime 1.32:

- TensorFlow's C++ core logs through absl. What it writes while it is imported (oneDNN's
  "custom operations are on", the CPU-feature notice, absl's "before InitializeLog" warning)
  comes before any log setting applies and is not held back by `TF_CPP_MIN_LOG_LEVEL`, so
  the import runs with file descriptor 2 on /dev/null (`quiet_import`).
- Later lines, such as TensorFlow's error line "oneDNN supports DT_HALF only on platforms with
  AVX-512" (seen while a network is unfrozen on a CPU with AVX-512 and VNNI but without
  AVX-512 FP16), obey `TF_CPP_MIN_LOG_LEVEL=3`. It is set,
  not defaulted: a value of 2 in the user's environment (a common setting) lets that error
  line through.
- ONNX Runtime's process-wide logger (set before its first session) and OpenCV's logger
  have their own levels; howold reports every failure itself.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

#: Read by the native libraries when they load, hence set before any of them is imported.
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3", "OPENCV_LOG_LEVEL": "SILENT"}
#: ONNX Runtime's severity for errors only (0 verbose, 1 info, 2 warning, 3 error, 4 fatal).
ONNXRUNTIME_ERRORS_ONLY = 3

#: Set by `quiet()` (the CLI without --verbose); the library alone leaves every log as it is.
quiet_mode = False


def quiet() -> None:
    """From now on, in this process and the processes it starts, native libraries log nothing
    below errors and the lines they write while loading are dropped."""
    global quiet_mode
    quiet_mode = True
    os.environ.update(ENVIRONMENT)
    if "cv2" in sys.modules:  # OpenCV read its environment variable when it was imported
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


@contextlib.contextmanager
def stderr_dropped() -> Iterator[None]:
    """File descriptor 2 on /dev/null meanwhile (in quiet mode; else nothing changes): what
    native code writes there directly, which no log level holds back."""
    if not quiet_mode:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_import(name: str) -> ModuleType:
    """The module `name`, imported with what its native libraries write while loading dropped
    in quiet mode. An ImportError is raised as usual (stderr is back by then)."""
    module = sys.modules.get(name)
    if module is None:
        with stderr_dropped():
            module = importlib.import_module(name)
    if quiet_mode and name == "onnxruntime":
        module.set_default_logger_severity(ONNXRUNTIME_ERRORS_ONLY)
    return module
