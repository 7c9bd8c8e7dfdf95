"""The interface every backbone implements."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ChipSpec:
    """How a face is cut out for a backbone: side in pixels and dlib's padding around the landmarks."""

    size: int
    padding: float


class Backbone(ABC):
    """A pretrained face network that turns aligned chips into feature vectors."""

    name: str
    chip: ChipSpec
    feature_size: int
    #: A human-readable description of the preprocessing; part of cache keys and sidecars.
    preprocessing: str
    #: Heads trained on this backbone's features are saved as weights/<heads_name>.keras;
    #: backbones computing the same features share a name.
    heads_name: str = ""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("heads_name") and "name" in cls.__dict__:
            cls.heads_name = cls.name

    @abstractmethod
    def embed(self, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Features of a batch of chips: uint8 (N, size, size, 3) RGB -> float32 (N, feature_size)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the weights in use, so caches built with other weights are not reused."""

    def describe(self) -> dict:
        return {
            "backbone": self.name,
            "chip_size": self.chip.size,
            "chip_padding": self.chip.padding,
            "feature_size": self.feature_size,
            "preprocessing": self.preprocessing,
            "weights": self.fingerprint(),
        }


class KerasBackbone(Backbone):
    """A backbone built as a Keras model, so it can be frozen or unfrozen by stage."""

    #: names of the layers that end each stage, in order from input to output
    stages: tuple[str, ...] = ()

    @abstractmethod
    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        """uint8 chips -> float32 network input."""

    @property
    @abstractmethod
    def model(self):
        """The keras.Model from preprocessed input to features."""

    def embed(self, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        outputs = [
            np.asarray(self._forward(self.preprocess(chips[start : start + batch_size])))
            for start in range(0, len(chips), batch_size)
        ]
        if not outputs:
            return np.zeros((0, self.feature_size), np.float32)
        return np.concatenate(outputs).astype(np.float32)

    def _forward(self, batch: np.ndarray):
        # A compiled function, not model(x) eagerly: eager calls cost several GB of RSS.
        if getattr(self, "_compiled_forward", None) is None:
            import tensorflow as tf

            model = self.model
            self._compiled_forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True, autograph=False)
        return self._compiled_forward(batch)


def file_fingerprint(path: str | Path) -> str:
    """Name, size and a hash of the first and last MiB: cheap, and changes when the file does."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), 2)
            digest.update(handle.read())
    return f"{path.name}:{size}:{digest.hexdigest()[:16]}"
