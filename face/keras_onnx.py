"""Keras inference graphs -> ONNX, for the layers howold's models are made of.

Why: ONNX Runtime runs dlib's ResNet about twice as fast as TensorFlow on small CPU batches
(`benchmarks/bench_latency.py`), and howold's backbones and heads use fifteen layer kinds,
so a direct translation is shorter and sturdier than a general converter. Keras is channels-last,
ONNX's convolutions channels-first: the graph transposes once after the input and
everything in between is NCHW. Nested functional models (a fine-tuned top, the heads) are
inlined. A layer kind it does not know raises ExportError naming the layer.

This is the Keras side of a model (TensorFlow needed): `onnx_export` writes its graph as the
file the light path runs; a model without such a file is translated here when the `onnx`
runtime opens it, and checked against Keras (`check_against_keras`).
"""
from __future__ import annotations

import numpy as np

from .backbones.base import INPUT_LAYER
from .errors import ExportError
from .model_files import OUTPUTS

OPSET = 17
#: The largest difference in any probability allowed between ONNX Runtime and Keras.
TOLERANCE = 1e-4

__all__ = ["ExportError", "TOLERANCE", "check_against_keras", "export_onnx", "inference_models", "translate"]


class _Graph:
    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}:{self.count}"

    def constant(self, array: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attributes) -> str:
        from onnx import helper

        output = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


class _Translator:
    """Walks a functional Keras model from its outputs back to its inputs, emitting nodes."""

    def __init__(self, graph: _Graph):
        self.graph = graph
        self.pending_pads: dict[str, tuple[str, list[int]]] = {}  # ZeroPadding2D: (its input, ONNX pads)
        self.emitted_pads: dict[str, str] = {}

    def model(self, model, inputs: list[str]) -> list[str]:
        names = {id(tensor): name for tensor, name in zip(model.inputs, inputs)}

        def visit(tensor) -> str:
            if id(tensor) not in names:
                layer, node_index, _ = tensor._keras_history
                node = layer._inbound_nodes[node_index]
                sources = [visit(t) for t in node.input_tensors]
                outputs = self.layer(layer, sources, node)
                for output_tensor, name in zip(node.output_tensors, outputs):
                    names[id(output_tensor)] = name
            return names[id(tensor)]

        return [self.materialize(visit(tensor)) for tensor in model.outputs]

    def materialize(self, name: str) -> str:
        """A real tensor for `name`: a ZeroPadding2D becomes a Pad node for consumers that
        are not convolutions (which take it as their own padding)."""
        if name not in self.pending_pads:
            return name
        if name not in self.emitted_pads:
            source, pads = self.pending_pads[name]
            self.emitted_pads[name] = self.graph.node("Pad", [source, self.graph.constant(np.array(pads, np.int64), "pads")], "pad")
        return self.emitted_pads[name]

    def layer(self, layer, sources: list[str], node) -> list[str]:
        from .optional import require_keras

        keras = require_keras("translating a Keras model to ONNX")

        g = self.graph
        kind = type(layer).__name__
        hint = layer.name
        if isinstance(layer, keras.Model):
            return self.model(layer, [self.materialize(s) for s in sources])
        if kind == "ZeroPadding2D":
            (top, bottom), (left, right) = layer.padding
            self.pending_pads[sources[0] + "+pad"] = (self.materialize(sources[0]), [0, 0, top, left, 0, 0, bottom, right])
            return [sources[0] + "+pad"]
        if kind == "Conv2D":
            return [self._conv(layer, sources[0], node.input_tensors[0].shape)]
        x = [self.materialize(s) for s in sources]
        if kind == "Normalization":
            mean = np.asarray(layer.mean, np.float32).reshape(1, -1, 1, 1)
            scale = 1.0 / np.maximum(np.sqrt(np.asarray(layer.variance, np.float32)), keras.config.epsilon()).reshape(1, -1, 1, 1)
            centred = g.node("Sub", [x[0], g.constant(mean, "mean")], hint)
            return [g.node("Mul", [centred, g.constant(scale.astype(np.float32), "scale")], hint)]
        if kind == "ChannelAffine":
            gamma, beta = (np.asarray(w, np.float32).reshape(1, -1, 1, 1) for w in layer.get_weights())
            scaled = g.node("Mul", [x[0], g.constant(gamma, "gamma")], hint)
            return [g.node("Add", [scaled, g.constant(beta, "beta")], hint)]
        if kind == "BatchNormalization":  # inference mode: a fixed per-channel scale and shift
            rank = len(node.input_tensors[0].shape)
            axis = layer.axis if isinstance(layer.axis, int) else (list(layer.axis) + [None])[0]
            if axis not in (-1, rank - 1):
                raise ExportError(f"layer {layer.name!r}: only batch norm over the channels can be exported")
            channels = node.input_tensors[0].shape[-1]
            gamma = np.asarray(layer.gamma, np.float32) if layer.scale else np.ones(channels, np.float32)
            beta = np.asarray(layer.beta, np.float32) if layer.center else np.zeros(channels, np.float32)
            scale = gamma / np.sqrt(np.asarray(layer.moving_variance, np.float32) + layer.epsilon)
            shift = beta - np.asarray(layer.moving_mean, np.float32) * scale
            shape = (1, -1, 1, 1) if rank == 4 else (1, -1)
            scaled = g.node("Mul", [x[0], g.constant(scale.reshape(shape).astype(np.float32), "bn_scale")], hint)
            return [g.node("Add", [scaled, g.constant(shift.reshape(shape).astype(np.float32), "bn_shift")], hint)]
        if kind == "Activation":
            return [self._activation(layer, x[0])]
        if kind == "Add":
            return [g.node("Sum", x, hint)]
        if kind == "Concatenate":  # channels: the last axis in Keras, axis 1 here
            rank = len(node.input_tensors[0].shape)
            if layer.axis not in (-1, rank - 1) or rank != 4:
                raise ExportError(f"layer {layer.name!r}: only concatenation of image channels can be exported")
            return [g.node("Concat", x, hint, axis=1)]
        if kind == "Rescaling":
            scaled = g.node("Mul", [x[0], g.constant(np.array(layer.scale, np.float32), "scale")], hint)
            return [g.node("Add", [scaled, g.constant(np.array(layer.offset, np.float32), "offset")], hint)]
        if kind == "Flatten":  # Keras flattens channels-last: back to NHWC first
            channels_last = g.node("Transpose", x, hint, perm=[0, 2, 3, 1]) if len(node.input_tensors[0].shape) == 4 else x[0]
            return [g.node("Flatten", [channels_last], hint, axis=1)]
        if kind == "ReLU":
            config = layer.get_config()
            if config.get("max_value") is not None or config.get("negative_slope") or config.get("threshold"):
                raise ExportError(f"layer {layer.name!r}: only a plain ReLU can be exported")
            return [g.node("Relu", x, hint)]
        if kind in ("MaxPooling2D", "AveragePooling2D"):
            if layer.padding != "valid":
                raise ExportError(f"layer {layer.name!r}: only 'valid' pooling can be exported")
            op = "MaxPool" if kind == "MaxPooling2D" else "AveragePool"
            return [g.node(op, x, hint, kernel_shape=list(layer.pool_size), strides=list(layer.strides))]
        if kind == "GlobalAveragePooling2D":
            return [g.node("Flatten", [g.node("GlobalAveragePool", x, hint)], hint)]
        if kind == "ZeroPadAdd":
            shapes = [tensor.shape[1:] for tensor in node.input_tensors]
            target = [max(a, b) for a, b in zip(*shapes)]
            padded = []
            for name, shape in zip(x, shapes):
                height, width, channels = (t - s for t, s in zip(target, shape))
                if height or width or channels:
                    pads = g.constant(np.array([0, 0, 0, 0, 0, channels, height, width], np.int64), "pads")
                    name = g.node("Pad", [name, pads], hint)
                padded.append(name)
            return [g.node("Add", padded, hint)]
        if kind == "Dense":
            return [self._dense(layer, x[0])]
        if kind in ("Dropout", "InputLayer"):
            return x
        raise ExportError(f"layer {layer.name!r} of kind {kind}: not supported by the ONNX export")

    def _conv(self, layer, source: str, input_shape) -> str:
        g = self.graph
        pads = [0, 0, 0, 0]  # top, left, bottom, right
        if source in self.pending_pads:
            source, full = self.pending_pads[source]
            pads = [full[2], full[3], full[6], full[7]]
        if layer.padding not in ("valid", "same") or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
            raise ExportError(f"layer {layer.name!r}: only ungrouped, undilated 'valid' or 'same' convolutions can be exported")
        weights = layer.get_weights()
        kernel = np.asarray(weights[0], np.float32).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if layer.padding == "same":  # TensorFlow's: the odd pixel of padding goes after
            for axis, (size, k, stride) in enumerate(zip(input_shape[1:3], kernel.shape[2:], layer.strides)):
                total = max((-(-size // stride) - 1) * stride + k - size, 0)
                pads[axis] += total // 2
                pads[axis + 2] += total - total // 2
        inputs = [source, g.constant(kernel, "kernel")]
        if layer.use_bias:
            inputs.append(g.constant(np.asarray(weights[1], np.float32), "bias"))
        output = g.node("Conv", inputs, layer.name, kernel_shape=list(kernel.shape[2:]), strides=list(layer.strides), pads=pads)
        return self._activation(layer, output)

    def _dense(self, layer, source: str) -> str:
        g = self.graph
        weights = layer.get_weights()
        output = g.node("MatMul", [source, g.constant(np.asarray(weights[0], np.float32), "kernel")], layer.name)
        if layer.use_bias:
            output = g.node("Add", [output, g.constant(np.asarray(weights[1], np.float32), "bias")], layer.name)
        return self._activation(layer, output)

    def _activation(self, layer, output: str) -> str:
        name = layer.get_config().get("activation") or "linear"
        if name == "linear":
            return output
        if name == "relu":
            return self.graph.node("Relu", [output], layer.name)
        if name == "softmax":
            return self.graph.node("Softmax", [output], layer.name, axis=-1)
        raise ExportError(f"layer {layer.name!r}: activation {name!r} not supported by the ONNX export")


def export_onnx(models: list, input_shape: tuple[int, int, int], output_names: list[str]):
    """One ONNX graph from preprocessed float32 NHWC chips (input "chips") through `models`
    applied in turn (each one's outputs feed the next one's inputs), with the last one's
    outputs named `output_names`."""
    from onnx import TensorProto, checker, helper

    graph = _Graph()
    translator = _Translator(graph)
    current = [graph.node("Transpose", ["chips"], "nchw", perm=[0, 3, 1, 2])]
    for model in models:
        current = translator.model(model, current)
    if isinstance(model.output, dict):  # outputs by name, whatever order Keras keeps them in
        by_tensor = {id(tensor): name for tensor, name in zip(model.outputs, current)}
        missing = set(output_names) - set(model.output)
        if missing:
            raise ExportError(f"model {model.name!r} has no outputs {sorted(missing)}")
        current = [by_tensor[id(model.output[name])] for name in output_names]
    outputs = [model.output[name] for name in output_names] if isinstance(model.output, dict) else list(model.outputs)
    if len(current) != len(output_names):
        raise ExportError(f"the last model gives {len(current)} outputs, not {len(output_names)} ({output_names})")
    for name, output in zip(output_names, current):
        graph.nodes.append(helper.make_node("Identity", [output], [name], name=name))
    onnx_graph = helper.make_graph(
        graph.nodes,
        "howold",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", _width(tensor)]) for name, tensor in zip(output_names, outputs)],
        graph.initializers,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="howold")
    model.ir_version = 8
    checker.check_model(model)
    return model


def _width(tensor) -> int | str:
    """An output's number of classes, recorded in the graph (empty batches need it)."""
    width = tensor.shape[-1]
    return int(width) if width is not None else "classes"


def inference_models(heads, backbone) -> list:
    """The Keras models a trained model's graph runs in turn: its heads alone when they take
    the chips themselves, else the backbone up to the heads' boundary, then the heads."""
    return [heads.model] if heads.boundary == INPUT_LAYER else [backbone.model_to(heads.boundary), heads.model]


def translate(heads, backbone):
    """(the ONNX graph, the Keras models it came from) for a trained model and its backbone."""
    models = inference_models(heads, backbone)
    chip = backbone.chip.size
    return export_onnx(models, (chip, chip, 3), list(OUTPUTS)), models


def check_against_keras(session, models, backbone) -> None:
    """One eager Keras pass over two probe chips (no tracing), compared output by output
    with `session`'s: ExportError over TOLERANCE."""
    size = backbone.chip.size
    ramp = np.linspace(0, 255, size * size * 3, dtype=np.float32).reshape(size, size, 3)
    probe = np.stack([ramp, ramp[::-1, ::-1]]).astype(np.uint8)
    values = backbone.preprocess(probe)
    for model in models:
        values = model(values, training=False)
    expected = values if isinstance(values, dict) else dict(zip(OUTPUTS, values))
    actual = dict(zip(OUTPUTS, session.run(OUTPUTS, {"chips": backbone.preprocess(probe)})))
    for name in OUTPUTS:
        difference = float(np.abs(np.asarray(expected[name]) - actual[name]).max())
        if not difference <= TOLERANCE:
            raise ExportError(f"the ONNX graph differs from the Keras model by {difference:.2g} in {name!r} (tolerance {TOLERANCE}); use runtime 'keras'")
