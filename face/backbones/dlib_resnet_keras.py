"""dlib's face-recognition ResNet rebuilt in Keras 3, with weights read from dlib's own file.

Why: the dlib backbone (``dlib_resnet.py``) runs one face at a time on the CPU and cannot be
fine-tuned. This module reads ``dlib_face_recognition_resnet_model_v1.dat`` with a small
parser of dlib's serialization format, builds the same network from Keras layers and
copies the weights in, so the embeddings match dlib's (max abs difference below 1e-6 on
real chips) while batching, running on a GPU and freezing or unfreezing by stage.

Surprises: tag and skip wrappers store only a version number, so the file does not say
which is which, nor which tag an add_prev or skip refers to; the builder below recognises
the residual-block pattern instead. And in the last down-sampling blocks the strided 3x3
convolution (no padding) gives a smaller map than the 2x2 average pool of the shortcut
(3x3 vs 4x4, then 1x1 vs 2x2): dlib's add_prev pads the smaller tensor with zeros at the
bottom/right (and in extra channels), and the final global average then includes those
zeros. The Keras model reproduces that.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .base import ChipSpec, KerasBackbone, file_fingerprint
from .dlib_net_file import DlibLayer, parse_dlib_net, read_dlib_net
from .dlib_resnet import dlib_model_path

__all__ = ["STAGES", "DlibLayer", "DlibResNetKeras", "parse_dlib_net", "read_dlib_net"]

#: Names of the layers that end each stage, from input to output (see `build_keras_model`).
#: The last stage, named after its last layer, is level 5 (one down block, 4x4 -> 2x2), the
#: global pool and the 128-wide fc layer: the fc alone is too small to be worth a stage.
STAGES = ("stem", "level1", "level2", "level3", "level4", "embedding")


class DlibResNetKeras(KerasBackbone):
    """dlib's face ResNet as a Keras model: same 128-d descriptors as `DlibResNet`, batched.

    ``preprocess`` only casts to float32; the model's first layer (``input_scale``) does
    dlib's per-channel mean subtraction and division by 256, so the model takes 0..255 RGB.
    """

    name = "dlib-resnet-keras"
    heads_name = "dlib-resnet"  # same network and weights as dlib-resnet, so it shares its heads
    chip = ChipSpec(size=150, padding=0.25)
    feature_size = 128
    preprocessing = "dlib 5-point aligned chip 150x150 padding 0.25, RGB float32 0..255; (x - dlib channel mean) / 256 inside the model"
    stages = STAGES

    def __init__(self, weights: str | Path | None = None):
        self._weights = Path(weights) if weights else None
        if self._weights is not None and not self._weights.is_file():
            raise WeightsError(f"{self._weights}: no such dlib weights file")
        self._model = None

    @property
    def weights_path(self) -> Path:
        """dlib's own weights file; found on first use, since an exported model needs none."""
        if self._weights is None:
            self._weights = dlib_model_path("recognition")
            if not self._weights.is_file():
                raise WeightsError(f"{self._weights}: no such dlib weights file")
        return self._weights

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        return np.asarray(chips, dtype=np.float32)

    @property
    def model(self):
        if self._model is None:
            self.register_keras_layers()
            from .dlib_resnet_keras_layers import build_keras_model

            self._model = build_keras_model(read_dlib_net(self.weights_path), str(self.weights_path))
        return self._model

    @classmethod
    def register_keras_layers(cls) -> None:
        from ..optional import require_keras

        require_keras(f"backbone {cls.name!r} as a Keras model")
        from . import dlib_resnet_keras_layers  # noqa: F401 - registers ChannelAffine and ZeroPadAdd

    def fingerprint(self) -> str:
        return file_fingerprint(self.weights_path)


def __getattr__(name: str):
    """The Keras parts (`build_keras_model`, `ChannelAffine`, `ZeroPadAdd`) load on first use."""
    if name in ("build_keras_model", "ChannelAffine", "ZeroPadAdd"):
        DlibResNetKeras.register_keras_layers()
        from . import dlib_resnet_keras_layers

        return getattr(dlib_resnet_keras_layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
