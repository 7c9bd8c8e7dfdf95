"""The network and heads as one ONNX graph, run by ONNX Runtime.

Why: on 2 CPU cores it runs dlib's ResNet at about twice TensorFlow's speed for the few
faces of a photo, and a new batch shape costs no tracing, so batches need no padding. The
graph comes from the ONNX file exported beside the `.keras` model (`howold export`), which
needs neither TensorFlow nor Keras; a model without one is translated from the Keras models
at load (`face.onnx_export`) and checked against them: a difference over `TOLERANCE`
raises ExportError.
"""
from __future__ import annotations

import numpy as np

from ..backbones.base import INPUT_LAYER, KerasBackbone
from ..errors import ConfigError, WeightsError
from ..heads import onnx_export_of
from ..onnx_export import ExportError, export_onnx
from .base import OUTPUTS, Runtime

#: The largest difference in any probability allowed between ONNX Runtime and Keras.
TOLERANCE = 1e-4


def create_session(model: bytes | str, spin: bool = True):
    """An ONNX Runtime CPU session (model bytes or a path), quiet below errors. `spin`: its
    threads keep spinning a moment after each run (ONNX Runtime's default; faster between
    the network's many operators) instead of sleeping at once (the detector's choice, so
    that its idle threads do not slow the network's session that runs right after it)."""
    from ..native_logs import quiet_import

    onnxruntime = quiet_import("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    """The exported ONNX file of the heads (`heads.onnx_export_of`: written by `howold export`
    and by `howold train`) when there is one: no Keras, no TensorFlow, nothing translated or
    checked at start. Else the Keras models are translated and checked at load (TensorFlow
    needed). `variant`: the sidecar entry naming the file ("onnx"; another entry, such as
    an int8 export's, selects another file)."""

    name = "onnx"

    def __init__(self, backbone, heads, variant: str = "onnx"):
        super().__init__(backbone, heads)
        if not isinstance(backbone, KerasBackbone):
            raise ConfigError(f"runtime 'onnx' needs a Keras backbone; {backbone.name!r} is not one: use runtime 'keras'")
        self.model_path = onnx_export_of(heads, variant)
        if self.model_path is not None:
            if heads.backbone not in (backbone.name, backbone.heads_name):
                raise WeightsError(f"{heads.path}: made with backbone {heads.backbone!r}, not {backbone.name!r}; use --backbone {heads.backbone}")
            self.session = create_session(str(self.model_path))
            return
        models = [heads.model] if heads.boundary == INPUT_LAYER else [backbone.model_to(heads.boundary), heads.model]
        chip = backbone.chip.size
        graph = export_onnx(models, (chip, chip, 3), list(OUTPUTS))
        self.session = create_session(graph.SerializeToString())
        check_against_keras(self.session, models, backbone)

    def predict(self, chips: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        if len(chips) == 0:  # empty arrays of each output's width
            return {output.name: np.zeros((0, output.shape[-1]), np.float32) for output in self.session.get_outputs()}
        parts = [
            self.session.run(OUTPUTS, {"chips": self.backbone.preprocess(chips[start : start + batch_size])})
            for start in range(0, len(chips), batch_size)
        ]
        return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(OUTPUTS)}

    def warm_up(self, batch_size: int = 32) -> None:
        """One chip through the graph: ONNX Runtime needs no tracing per batch size (its
        kernels are prepared when the session loads), only its first allocations."""
        size = self.backbone.chip.size
        self.predict(np.zeros((1, size, size, 3), np.uint8), batch_size)

    def _check_against_keras(self, models) -> None:
        check_against_keras(self.session, models, self.backbone)


def check_against_keras(session, models, backbone) -> None:
    """One eager Keras pass over two probe chips (no tracing), compared output by output
    with `session`'s: ExportError over TOLERANCE."""
    size = backbone.chip.size
    ramp = np.linspace(0, 255, size * size * 3, dtype=np.float32).reshape(size, size, 3)
    probe = np.stack([ramp, ramp[::-1, ::-1]]).astype(np.uint8)
    values = backbone.preprocess(probe)
    for model in models:
        values = model(values, training=False)
    expected = values if isinstance(values, dict) else dict(zip(OUTPUTS, values))
    actual = dict(zip(OUTPUTS, session.run(OUTPUTS, {"chips": backbone.preprocess(probe)})))
    for name in OUTPUTS:
        difference = float(np.abs(np.asarray(expected[name]) - actual[name]).max())
        if not difference <= TOLERANCE:
            raise ExportError(f"the ONNX graph differs from the Keras model by {difference:.2g} in {name!r} (tolerance {TOLERANCE}); use runtime 'keras'")
