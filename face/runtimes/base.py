"""The interface every inference runtime implements."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

OUTPUTS = ("age", "gender", "race")


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
        """Prepare every batch shape `predict` will meet, so no request pays for the first."""
