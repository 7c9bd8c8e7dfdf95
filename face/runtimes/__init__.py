"""A registry of inference runtimes behind one interface: what runs the network and heads.

`onnx` runs one ONNX graph (chips in, probabilities out) with ONNX Runtime: the file
exported beside the model (no TensorFlow), else one translated from the Keras model at load.
About twice TensorFlow's speed on a few faces, with no retracing for a new face count
(`benchmarks/bench_latency.py`). `keras` runs the Keras models themselves
through TensorFlow. Modules are imported only when their runtime is created.
"""
from __future__ import annotations

from typing import Callable

from ..registry import Registry
from .base import Runtime

RUNTIMES: Registry[Runtime] = Registry("runtime", {
    "onnx": "face.runtimes.onnx_runtime:OnnxRuntime",
    "keras": "face.runtimes.keras_runtime:KerasRuntime",
})

DEFAULT_RUNTIME = "onnx"


def register_runtime(name: str, factory: Callable[..., Runtime]) -> None:
    RUNTIMES.register(name, factory)


def list_runtimes() -> list[str]:
    return RUNTIMES.names()


def create_runtime(name: str, backbone, heads) -> Runtime:
    """The runtime called `name` for a backbone and the trained heads it feeds."""
    return RUNTIMES.create(name, backbone=backbone, heads=heads)


__all__ = ["DEFAULT_RUNTIME", "Runtime", "create_runtime", "list_runtimes", "register_runtime"]
