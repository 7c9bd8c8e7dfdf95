"""The interface every backbone implements."""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..optional import require_keras


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

    @classmethod
    def register_keras_layers(cls) -> None:
        """Make the custom Keras layers of this backbone known (model files name them)."""

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
    """A backbone built as a Keras model, so it can be frozen or unfrozen by stage.

    Stages run from input to output; `stages` names the layer that ends each one (the last
    stage may be followed by weightless layers such as a global pool). Unfreezing the last
    k stages cuts the model at the end of stage -k-1, its *boundary*: the frozen part below
    runs once and its activations are cached, the part above is trained.
    """

    #: names of the layers that end each stage, in order from input to output
    stages: tuple[str, ...] = ()
    #: False for networks trained from scratch (no pretrained weights to keep)
    pretrained: bool = True

    @abstractmethod
    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        """uint8 chips -> float32 network input."""

    @property
    @abstractmethod
    def model(self):
        """The keras.Model from preprocessed input to features."""

    def embed(self, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        return self.activations(chips, (None,), batch_size)[None]

    # ---- stages -----------------------------------------------------------------------

    def boundary(self, unfrozen_stages: int) -> str | None:
        """The layer whose output feeds the last `unfrozen_stages` stages.

        0 gives None (the features themselves: heads only); all stages give INPUT_LAYER
        (training end to end from the preprocessed chips).
        """
        if not 0 <= unfrozen_stages <= len(self.stages):
            raise ConfigError(f"{self.name} has {len(self.stages)} stages ({', '.join(self.stages)}); cannot unfreeze {unfrozen_stages}")
        if unfrozen_stages == 0:
            return None
        if unfrozen_stages == len(self.stages):
            return INPUT_LAYER
        return self.stages[-unfrozen_stages - 1]

    def layer_shape(self, layer: str | None) -> tuple[int, ...]:
        """Per-chip shape of the activations at `layer` (None: the features)."""
        return tuple(self._tensor(layer).shape[1:])

    def _tensor(self, layer: str | None):
        if layer is None:
            return self.model.outputs[0]
        if layer == INPUT_LAYER:
            return self.model.inputs[0]
        return self.model.get_layer(layer).output

    def model_to(self, layer: str):
        """The part of the network from its input up to `layer`'s output (shares weights)."""
        keras = require_keras(f"backbone {self.name!r} cut at {layer!r}")

        return keras.Model(self.model.inputs[0], self._tensor(layer), name=f"{self.model.name}_to_{layer}")

    def top_model(self, boundary: str | None):
        """The part of the network above `boundary`: its activations -> features.

        It shares layers (and so weights) with `model`, so training it trains the backbone.
        """
        keras = require_keras(f"backbone {self.name!r} above {boundary!r}")

        if boundary is None:
            raise ValueError("nothing of the backbone lies above its output")
        if boundary == INPUT_LAYER:
            return self.model
        return keras.Model(self._tensor(boundary), self.model.outputs[0], name=f"{self.model.name}_above_{boundary}")

    def activations(self, chips: np.ndarray, layers: tuple[str | None, ...], batch_size: int = 32) -> dict:
        """float32 activations of a batch of uint8 chips at each of `layers` (None: features)."""
        forward = self._compiled(tuple(layers))
        outputs: dict = {layer: [] for layer in layers}
        for batch, count in padded_batches(chips, batch_size):
            values = forward(self.preprocess(batch))
            for layer, value in zip(layers, values):
                outputs[layer].append(np.asarray(value[:count], np.float32))
        return {
            layer: np.concatenate(parts) if parts else np.zeros((0,) + self.layer_shape(layer), np.float32)
            for layer, parts in outputs.items()
        }

    def _compiled(self, layers: tuple[str | None, ...]):
        # A compiled function, not model(x) eagerly: eager calls cost several GB of RSS.
        cache = self.__dict__.setdefault("_compiled_forwards", {})
        if layers not in cache:
            keras = require_keras(f"backbone {self.name!r} as a Keras model")
            import tensorflow as tf

            inner = [layer for layer in dict.fromkeys(layers) if layer != INPUT_LAYER]
            model = keras.Model(self.model.inputs, [self._tensor(layer) for layer in inner]) if inner else None

            def forward(x):
                values = model(x, training=False) if model is not None else []
                values = dict(zip(inner, values if isinstance(values, (list, tuple)) else [values]))
                values[INPUT_LAYER] = x
                return [values[layer] for layer in layers]

            cache[layers] = tf.function(forward, reduce_retracing=True, autograph=False)
        return cache[layers]


def batch_ladder(batch_size: int) -> list[int]:
    """The batch sizes compiled functions ever see: powers of two up to `batch_size`, and it."""
    sizes = [1 << k for k in range(batch_size.bit_length()) if 1 << k < batch_size]
    return sizes + [batch_size]


def padded_batches(array: np.ndarray, batch_size: int):
    """(batch, real count) pairs with every batch padded (with copies of its first row) to a
    size of `batch_ladder`: a compiled function then traces at most len(ladder) shapes, all
    of which `warm_up` can trace in advance, instead of once per new face count (~0.5 s each)."""
    ladder = batch_ladder(batch_size)
    for start in range(0, len(array), batch_size):
        batch = array[start : start + batch_size]
        size = next(rung for rung in ladder if rung >= len(batch))
        if size > len(batch):
            batch = np.concatenate([batch, np.repeat(batch[:1], size - len(batch), axis=0)])
        yield batch, min(batch_size, len(array) - start)


#: The boundary name for "every stage unfrozen": the cache then holds the preprocessed chips.
INPUT_LAYER = "input"


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
