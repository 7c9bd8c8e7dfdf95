"""The network and heads as one ONNX graph, run by ONNX Runtime.

Why: on 2 CPU cores it runs dlib's ResNet at about twice TensorFlow's speed for the few
faces of a photo, and a new batch shape costs no tracing, so batches need no padding. The
graph is translated from the same Keras models at load (`face.onnx_export`, a fraction of a
second) and checked against them: a difference over `TOLERANCE` raises ExportError.
"""
from __future__ import annotations

import numpy as np

from ..backbones.base import INPUT_LAYER, KerasBackbone
from ..errors import ConfigError
from ..onnx_export import ExportError, export_onnx
from .base import OUTPUTS, Runtime

#: The largest difference in any probability allowed between ONNX Runtime and Keras.
TOLERANCE = 1e-4


def create_session(model: bytes | str, spin: bool = True):
    """An ONNX Runtime CPU session (model bytes or a path), quiet below errors. `spin`: its
    threads keep spinning a moment after each run (ONNX Runtime's default; faster between
    the network's many operators) instead of sleeping at once (the detector's choice, so
    that its idle threads do not slow the network's session that runs right after it)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    name = "onnx"

    def __init__(self, backbone, heads):
        super().__init__(backbone, heads)
        if not isinstance(backbone, KerasBackbone):
            raise ConfigError(f"runtime 'onnx' needs a Keras backbone; {backbone.name!r} is not one: use runtime 'keras'")
        if heads.boundary == INPUT_LAYER:
            models = [heads.model]
        else:
            models = [backbone.model_to(heads.boundary), heads.model]
        chip = backbone.chip.size
        self.graph = export_onnx(models, (chip, chip, 3), list(OUTPUTS))
        self.session = create_session(self.graph.SerializeToString())
        self._check_against_keras(models)

    def predict(self, chips: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        if len(chips) == 0:
            return self.heads.predict(np.zeros((0, 1), np.float32))  # empty arrays of the right widths
        parts = [
            self.session.run(OUTPUTS, {"chips": self.backbone.preprocess(chips[start : start + batch_size])})
            for start in range(0, len(chips), batch_size)
        ]
        return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(OUTPUTS)}

    def _check_against_keras(self, models) -> None:
        """One eager Keras pass over two probe chips (no tracing), compared output by output."""
        size = self.backbone.chip.size
        ramp = np.linspace(0, 255, size * size * 3, dtype=np.float32).reshape(size, size, 3)
        probe = np.stack([ramp, ramp[::-1, ::-1]]).astype(np.uint8)
        values = self.backbone.preprocess(probe)
        for model in models:
            values = model(values, training=False)
        expected = values if isinstance(values, dict) else dict(zip(OUTPUTS, values))
        actual = dict(zip(OUTPUTS, self.session.run(OUTPUTS, {"chips": self.backbone.preprocess(probe)})))
        for name in OUTPUTS:
            difference = float(np.abs(np.asarray(expected[name]) - actual[name]).max())
            if not difference <= TOLERANCE:
                raise ExportError(f"the ONNX graph differs from the Keras model by {difference:.2g} in {name!r} (tolerance {TOLERANCE}); use runtime 'keras'")
