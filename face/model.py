"""A trained model opened: its files (`model_files.ModelFile`) and, loaded only on first use,
its Keras model.

Why apart from the files: reading a sidecar says which backbone and preprocessing a model
expects and whether an exported ONNX file answers for it, so the light path (ONNX Runtime)
never needs Keras. The Keras model loads when something runs or translates it: the `keras`
runtime, the ONNX translation of a model without an export, training and evaluation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backbones.base import padded_batches
from .data import MAX_AGE, RACES
from .errors import WeightsError
from .model_files import ModelFile, read_sidecar
from .readout import AgeReadout


class TrainedHeads(ModelFile):
    """Heads plus the sidecar that says which backbone and preprocessing they expect.

    With a `path` and no model, the Keras model loads on first use of `model`: the sidecar
    alone says what an exported ONNX file needs, so inference from it never imports Keras.
    """

    def __init__(self, model: object, metadata: dict, path: str | Path | None = None):
        super().__init__(metadata, path)
        self._model = model

    @property
    def model(self):
        if self._model is None and self.path is not None:
            self._model = _load_keras_heads(self.path, self.metadata)
        return self._model

    @model.setter
    def model(self, model) -> None:
        self._model = model

    @property
    def readout(self) -> AgeReadout:
        """The age readout its sidecar names (AgeReadout.from_metadata), the identity if none."""
        return AgeReadout.from_metadata(self.metadata)

    def features_of(self, backbone, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """What this model takes as input, computed by `backbone` from uint8 chips."""
        if self.boundary is None:
            return backbone.embed(chips, batch_size=batch_size)
        return backbone.activations(chips, (self.boundary,), batch_size=batch_size)[self.boundary]

    def check_backbone(self, backbone, path=None) -> None:
        """A WeightsError when `backbone` cannot feed this model."""
        path = path if path is not None else self.path
        expected = self.metadata.get("input_shape") or [self.metadata.get("backbone", {}).get("feature_size")]
        if self.boundary is not None:
            stages = getattr(backbone, "stages", ())
            if not stages or self.metadata["backbone"]["backbone"] != backbone.name:
                raise WeightsError(f"{path}: fine-tuned on {self.metadata['backbone']['backbone']!r} above its layer {self.boundary!r}; use --backbone {self.metadata['backbone']['backbone']}")
            actual = list(backbone.layer_shape(self.boundary))
        else:
            actual = [backbone.feature_size]
        if list(expected) != actual:
            raise WeightsError(f"{path}: expects inputs of shape {list(expected)}, backbone {backbone.name!r} gives {actual}")

    def translated_to_onnx(self, backbone):
        """(one ONNX graph of `backbone` and these heads, the Keras models it came from), for
        a model with no exported file (`face.keras_onnx`; TensorFlow needed)."""
        from .keras_onnx import translate

        return translate(self, backbone)

    def check_onnx(self, session, models, backbone) -> None:
        """ExportError when `session` does not answer as the Keras `models` do (`keras_onnx.TOLERANCE`)."""
        from .keras_onnx import check_against_keras

        check_against_keras(session, models, backbone)

    def predict(self, features: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Probabilities per head; batches padded to `padded_batches`' fixed sizes."""
        if len(features) == 0:
            return {"age": np.zeros((0, MAX_AGE + 1)), "gender": np.zeros((0, 2)), "race": np.zeros((0, race_classes_of(self.model)))}
        if getattr(self, "_forward", None) is None:
            import tensorflow as tf

            model = self.model
            self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True, autograph=False)
        parts = [(self._forward(batch), count) for batch, count in padded_batches(features, batch_size)]
        return {name: np.concatenate([np.asarray(p[name])[:count] for p, count in parts]) for name in ("age", "gender", "race")}


def race_classes_of(model) -> int:
    """How many races a heads model tells apart: 7 (FairFace's) or 5 (UTKFace's, older heads)."""
    output = model.output
    return int(output["race"].shape[-1]) if isinstance(output, dict) else len(RACES)


def predict_views(model, features: np.ndarray, views: tuple[int, ...] = (0, 1)) -> dict[str, np.ndarray]:
    """Head probabilities for (N, views, D) features, averaged over the given views (0, 1: flip TTA)."""
    heads = TrainedHeads(model, {})
    outputs = [heads.predict(features[:, view].astype(np.float32)) for view in views]
    return {name: np.mean([o[name] for o in outputs], axis=0) for name in outputs[0]}


def load_heads(path: str | Path) -> TrainedHeads:
    """Load heads and their sidecar; a missing or broken file is a WeightsError naming it."""
    heads = read_heads(path)
    heads.model  # noqa: B018 - loads now, so that a broken file fails here
    return heads


def read_heads(path: str | Path) -> TrainedHeads:
    """Heads whose Keras model loads only when first used: the sidecar is read now (a
    WeightsError if the heads file or its sidecar is missing or unreadable)."""
    return TrainedHeads(None, read_sidecar(path), path)


def _load_keras_heads(path: Path, metadata: dict):
    from .optional import require_keras

    keras = require_keras(f"{path.name} has no exported ONNX file, so Keras runs it")
    if metadata.get("boundary"):  # a fine-tuned part of a backbone: its custom layers must be known
        from .backbones import backbone_factory

        backbone_factory(metadata.get("backbone", {}).get("backbone", "")).register_keras_layers()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for a bad file
        raise WeightsError(f"{path}: not a loadable Keras heads file ({type(error).__name__}: {error})") from None
