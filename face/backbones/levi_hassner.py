"""The Levi-Hassner age and gender network (CVPR 2015 workshops; seeds 000 and 004), from scratch.

Why: it is the baseline that shows what transfer learning buys. It has no pretrained weights;
`howold train --backbone levi-hassner --unfreeze all` trains it end to end with the heads.

As in the paper: three convolutions (96 7x7 stride 4, 256 5x5, 384 3x3), each followed by
ReLU and 3x3 stride-2 max pooling, the first two also by normalisation, then two fully
connected layers of 512 with ReLU and dropout 0.5. Changes, for 2 CPU cores: the input is a
64x64 chip instead of 227x227 (the last pooled map is 1x1x384 instead of 7x7x384), and the
normalisation is batch normalisation rather than local response normalisation, which Keras 3
does not ship and which batch normalisation superseded.
"""
from __future__ import annotations

import numpy as np

from .base import ChipSpec, KerasBackbone

DEFAULT_INPUT_SIZE = 64
#: the layer ending each stage: conv1, conv2, conv3, fc1, fc2
STAGES = ("norm1", "norm2", "pool3", "dropout1", "dropout2")


def build_levi_hassner(input_size: int = DEFAULT_INPUT_SIZE, seed: int = 0):
    """(N, size, size, 3) RGB 0..255 -> (N, 512), randomly initialised from `seed`."""
    import keras
    from keras import layers

    initializer = lambda offset: keras.initializers.GlorotUniform(seed=seed + offset)  # noqa: E731
    inputs = keras.Input((input_size, input_size, 3), name="chip")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="input_scale")(inputs)
    x = layers.Conv2D(96, 7, strides=4, activation="relu", kernel_initializer=initializer(1), name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.BatchNormalization(name="norm1")(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu", kernel_initializer=initializer(2), name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = layers.BatchNormalization(name="norm2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", kernel_initializer=initializer(3), name="conv3")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", kernel_initializer=initializer(4), name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout1")(x)
    x = layers.Dense(512, activation="relu", kernel_initializer=initializer(5), name="fc2")(x)
    outputs = layers.Dropout(0.5, name="dropout2")(x)
    return keras.Model(inputs, outputs, name="levi_hassner")


class LeviHassner(KerasBackbone):
    """Levi-Hassner's CNN with random weights: train it end to end (`--unfreeze all`)."""

    name = "levi-hassner"
    chip = ChipSpec(size=DEFAULT_INPUT_SIZE, padding=0.25)
    feature_size = 512
    preprocessing = "dlib 5-point aligned chip 64x64 padding 0.25, RGB float32 0..255; x / 127.5 - 1 inside the model"
    stages = STAGES
    pretrained = False

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = build_levi_hassner(DEFAULT_INPUT_SIZE, self.seed)
        return self._model

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        return np.asarray(chips, dtype=np.float32)

    def fingerprint(self) -> str:
        return f"random initialisation, seed {self.seed}"
