"""ONNX Runtime sessions, as every ONNX graph of howold runs: the detector's, the network's,
a fine-tuned model's features."""
from __future__ import annotations


def create_session(model: bytes | str, spin: bool = True):
    """An ONNX Runtime CPU session (model bytes or a path), quiet below errors. `spin`: its
    threads keep spinning a moment after each run (ONNX Runtime's default; faster between
    the network's many operators) instead of sleeping at once (the detector's choice, so
    that its idle threads do not slow the network's session that runs right after it)."""
    from .native_logs import quiet_import

    onnxruntime = quiet_import("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
