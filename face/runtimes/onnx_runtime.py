"""The network and heads as one ONNX graph, run by ONNX Runtime.

Why: on 2 CPU cores it runs dlib's ResNet at about twice TensorFlow's speed for the few
faces of a photo, and a new batch shape costs no tracing, so batches need no padding. The
graph comes from the ONNX file exported beside the `.keras` model (`howold export`), which
needs neither TensorFlow nor Keras. A model without one is the Keras side's: the trained
model translates its Keras models at load (`TrainedHeads.translated_to_onnx`, TensorFlow
needed) and checks the graph against them, a difference over `keras_onnx.TOLERANCE`
raising ExportError. This module imports neither Keras nor the translation.
"""
from __future__ import annotations

import numpy as np

from ..backbones.base import KerasBackbone
from ..errors import ConfigError, WeightsError
from ..model_files import OUTPUTS, onnx_export_of
from ..onnx_session import create_session
from .base import Runtime

__all__ = ["OnnxRuntime", "create_session"]


class OnnxRuntime(Runtime):
    """The exported ONNX file of the heads (`model_files.onnx_export_of`: written by `howold export`
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
        graph, models = heads.translated_to_onnx(backbone)  # the Keras side: TensorFlow needed
        self.session = create_session(graph.SerializeToString())
        self._check_against_keras(models)

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
        self.heads.check_onnx(self.session, models, self.backbone)

