"""The Keras layers and model of dlib's face ResNet (`dlib_resnet_keras`), apart so that
the backbone's chip, preprocessing and stages are known without importing Keras.

Importing this module registers the custom layers, which fine-tuned model files contain.
"""
from __future__ import annotations

import keras

from ..errors import WeightsError
from .dlib_net_file import DlibLayer


@keras.saving.register_keras_serializable(package="howold")
class ChannelAffine(keras.layers.Layer):
    """dlib's affine_: a fixed per-channel scale and shift (batch norm frozen at export).

    Its weights are not trainable, as in dlib; unfreezing a stage trains its convolutions.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones", trainable=False)
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros", trainable=False)

    def call(self, inputs):
        return inputs * self.gamma + self.beta


@keras.saving.register_keras_serializable(package="howold")
class ZeroPadAdd(keras.layers.Layer):
    """dlib's add_prev_: the sum of two tensors, the smaller padded with zeros at the end of
    its rows, columns and channels (dlib's tt::add reads out-of-range cells as 0)."""

    def compute_output_shape(self, input_shapes):
        first, second = input_shapes
        return (first[0],) + tuple(max(a, b) for a, b in zip(first[1:], second[1:]))

    def call(self, inputs):
        first, second = inputs
        target = [max(a, b) for a, b in zip(first.shape[1:], second.shape[1:])]

        def pad(x):
            extra = [t - s for t, s in zip(target, x.shape[1:])]
            if not any(extra):
                return x
            return keras.ops.pad(x, [[0, 0]] + [[0, e] for e in extra])

        return pad(first) + pad(second)


class _Records:
    """The parsed layers from input to output, taken one at a time with a check of kind."""

    def __init__(self, layers: list[DlibLayer], name: str):
        self.items = [layer for layer in reversed(layers) if layer.kind != "loss_metric"]
        self.index = 0
        self.name = name

    def peek(self, ahead: int = 0) -> str | None:
        index = self.index + ahead
        return self.items[index].kind if index < len(self.items) else None

    def take(self, kind: str) -> DlibLayer:
        found = self.peek()
        if found != kind:
            offset = self.items[self.index].offset if found else "end"
            raise WeightsError(f"{self.name}: expected a {kind} layer as layer {self.index} from the input, found {found} (record at byte {offset}); not dlib's face ResNet")
        self.index += 1
        return self.items[self.index - 1]


def build_keras_model(layers: list[DlibLayer], name: str = "weights") -> keras.Model:
    """A channels_last Keras model of a parsed dlib ResNet, weights set, float input 0..255.

    Layer names: the stem (``stem_conv``, ``stem_affine``, ``stem_relu``, ``stem`` = max
    pool), then ``level{L}_block{B}_{conv1,affine1,relu1,conv2,affine2,pool,add}`` and
    ``level{L}_block{B}`` (the block's relu), ``pool`` (global average) and
    ``embedding``. A new level starts at each down-sampling block; the last block's relu of
    level L is named ``level{L}``; `STAGES` names each stage's last layer.
    """
    records = _Records(layers, name)

    def conv(x, record: DlibLayer, layer_name: str):
        p = record.params
        if p["padding_y"] or p["padding_x"]:
            x = keras.layers.ZeroPadding2D(((p["padding_y"],) * 2, (p["padding_x"],) * 2), name=f"{layer_name}_pad")(x)
        layer = keras.layers.Conv2D(
            p["num_filters"], (p["nr"], p["nc"]), strides=(p["stride_y"], p["stride_x"]), padding="valid", name=layer_name
        )
        x = layer(x)
        layer.set_weights([p["filters"].transpose(2, 3, 1, 0), p["biases"]])  # OIHW -> HWIO
        return x

    def affine(x, record: DlibLayer, layer_name: str):
        layer = ChannelAffine(name=layer_name)
        x = layer(x)
        layer.set_weights([record.params["gamma"], record.params["beta"]])
        return x

    def pool(x, record: DlibLayer, layer_name: str, kind: str):
        p = record.params
        if p["padding_y"] or p["padding_x"]:
            raise WeightsError(f"{name}: unsupported padded {kind} (record at byte {record.offset})")
        size, strides = (p["nr"], p["nc"]), (p["stride_y"], p["stride_x"])
        cls = keras.layers.MaxPooling2D if kind == "max_pool" else keras.layers.AveragePooling2D
        return cls(size, strides=strides, padding="valid", name=layer_name)(x)

    source = records.take("input").params
    inputs = keras.Input((source["rows"], source["cols"], 3), name="chip")
    # dlib's input_rgb_image: (pixel - channel mean) / 256
    x = keras.layers.Normalization(mean=source["avg_rgb"], variance=[256.0**2] * 3, name="input_scale")(inputs)

    x = conv(x, records.take("con"), "stem_conv")
    x = affine(x, records.take("affine"), "stem_affine")
    records.take("relu")
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = pool(x, records.take("max_pool"), "stem", "max_pool")

    level, block = 1, 0
    while records.peek() == "tag_or_skip":  # each residual block starts with tag1 on its input
        records.take("tag_or_skip")
        down = records.peek(5) == "tag_or_skip"  # tag2, skip1, avg_pool follow a down block
        if down and block:
            level, block = level + 1, 0
        block += 1
        prefix = f"level{level}_block{block}"
        shortcut = x
        x = conv(x, records.take("con"), f"{prefix}_conv1")
        x = affine(x, records.take("affine"), f"{prefix}_affine1")
        records.take("relu")
        x = keras.layers.ReLU(name=f"{prefix}_relu1")(x)
        x = conv(x, records.take("con"), f"{prefix}_conv2")
        x = affine(x, records.take("affine"), f"{prefix}_affine2")
        if down:
            records.take("tag_or_skip")
            records.take("tag_or_skip")
            shortcut = pool(shortcut, records.take("avg_pool"), f"{prefix}_pool", "avg_pool")
        records.take("add_prev")
        x = ZeroPadAdd(name=f"{prefix}_add")([x, shortcut])
        last_of_level = records.peek(1) != "tag_or_skip" or records.peek(7) == "tag_or_skip"
        relu_name = f"level{level}" if last_of_level else prefix
        records.take("relu")
        x = keras.layers.ReLU(name=relu_name)(x)

    final_pool = records.take("avg_pool").params
    if final_pool["nr"] or final_pool["nc"]:
        raise WeightsError(f"{name}: expected dlib's avg_pool_everything before the fc layer")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    fc = records.take("fc").params
    if fc["biases"] is not None or fc["num_inputs"] != x.shape[-1]:
        raise WeightsError(f"{name}: fc layer takes {fc['num_inputs']} inputs with bias={fc['biases'] is not None}; expected {x.shape[-1]} without")
    dense = keras.layers.Dense(fc["num_outputs"], use_bias=False, name="embedding")
    outputs = dense(x)
    dense.set_weights([fc["weights"]])
    if records.peek() is not None:
        raise WeightsError(f"{name}: {len(records.items) - records.index} unexpected layers after the fc layer")
    if level != 5:
        raise WeightsError(f"{name}: found {level} residual levels, expected 5")
    return keras.Model(inputs, outputs, name="dlib_resnet")


