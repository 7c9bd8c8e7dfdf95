"""The Keras models run by TensorFlow: the backbone's compiled forward pass to the heads'
boundary, then the heads'. Batches are padded to `batch_ladder` sizes, which `warm_up`
traces in advance (a new shape costs TensorFlow ~0.5 s of tracing)."""
from __future__ import annotations

import numpy as np

from .base import Runtime


class KerasRuntime(Runtime):
    name = "keras"

    def predict(self, chips: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        return self.heads.predict(self.heads.features_of(self.backbone, chips, batch_size), batch_size)
