"""The interface every inference runtime implements."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..model_files import OUTPUTS  # noqa: F401 - what every runtime returns, by name


class Runtime(ABC):
    """uint8 chips (N, size, size, 3) -> the heads' probabilities {"age", "gender", "race"}."""

    name: str

    def __init__(self, backbone, heads):
        self.backbone = backbone
        self.heads = heads

    @abstractmethod
    def predict(self, chips: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Probabilities per head, in chunks of at most `batch_size` chips."""

    def warm_up(self, batch_size: int = 32) -> None:
        """Run each batch size of `batch_ladder` once, so that no request pays for the first
        of its shape (TensorFlow traces each, ~0.5 s; ONNX Runtime allocates)."""
        from ..backbones.base import batch_ladder

        size = self.backbone.chip.size
        for count in batch_ladder(batch_size):
            self.predict(np.zeros((count, size, size, 3), np.uint8), batch_size)
