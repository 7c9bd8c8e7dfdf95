"""The features a fine-tuned model's heads see, as a frozen backbone of their own.

Why: after progressive unfreezing, the network below the heads is fixed again. Heads
retrained on its features (a new loss, new augmented views, new data) cost minutes on a
CPU, where retraining the unfrozen stages costs hours. The features come from the
model's exported ONNX graph (`howold export`), run up to the heads' input, so neither
TensorFlow nor a translation is needed to compute them. New heads trained on them can be
put back on the model with `heads.copy_head_weights`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..model_files import HEAD_LAYERS, ModelFile, onnx_export_of
from .base import Backbone, ChipSpec

#: The heads' first layer; its input is the features (heads.build_heads, `model_files.HEAD_LAYERS`).
HEADS_INPUT_LAYER = HEAD_LAYERS[0]


class FineTunedFeatures(Backbone):
    """The input of a fine-tuned model's heads. `weights`: the model's `.keras` file (with
    its sidecar and ONNX export); default the shipped fine-tuned model."""

    name = "finetuned-features"
    heads_name = "finetuned-features"

    def __init__(self, weights: str | Path | None = None):
        from . import create_backbone

        if weights is None:
            from ..paths import shipped_weights_dir

            weights = shipped_weights_dir() / "dlib-resnet-keras-finetuned.keras"
        self.model_path = Path(weights)
        heads = ModelFile.read(self.model_path)
        if not heads.boundary:
            raise WeightsError(f"{self.model_path}: not a fine-tuned model (its heads sit on a frozen backbone); use that backbone's own features")
        self.onnx_path = onnx_export_of(heads)
        if self.onnx_path is None:
            raise WeightsError(f"{self.model_path}: no up-to-date ONNX export beside it; run `howold export {self.model_path}`")
        self.base = create_backbone(heads.backbone)
        self.chip: ChipSpec = self.base.chip
        self.feature_size = int(heads.metadata["heads"]["feature_size"])
        self.preprocessing = self.base.preprocessing
        self._fingerprint = ""
        self._session = None
        self._features_name = ""

    def _load(self) -> None:
        import onnx

        from ..onnx_session import create_session

        graph = onnx.load(str(self.onnx_path))
        first = [node for node in graph.graph.node if node.op_type == "MatMul" and node.output[0].split(":")[0] == HEADS_INPUT_LAYER]
        if len(first) != 1:
            raise WeightsError(f"{self.onnx_path}: cannot find the heads' input (one MatMul of layer {HEADS_INPUT_LAYER!r}); found {len(first)}")
        self._features_name = first[0].input[0]
        self._fingerprint = weights_below(graph.graph, self._features_name)
        graph.graph.output.append(onnx.helper.make_tensor_value_info(self._features_name, onnx.TensorProto.FLOAT, None))
        self._session = create_session(graph.SerializeToString())

    def embed(self, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        if self._session is None:
            self._load()
        if len(chips) == 0:
            return np.zeros((0, self.feature_size), np.float32)
        parts = [
            self._session.run([self._features_name], {"chips": self.base.preprocess(chips[start : start + batch_size])})[0]
            for start in range(0, len(chips), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32)

    def fingerprint(self) -> str:
        """A hash of the weights below the heads: heads retrained and put back on the same
        stages (a new ONNX file) keep the feature caches; other stages do not."""
        if self._session is None:
            self._load()
        return self._fingerprint


def weights_below(graph, tensor: str) -> str:
    """sha256 (first 20 hex digits) of the initializers that `tensor` is computed from, in the
    order the graph's nodes list them."""
    import hashlib

    from onnx import numpy_helper

    nodes = list(graph.node)
    producer = {output: index for index, node in enumerate(nodes) for output in node.output}
    initializers = {item.name: item for item in graph.initializer}
    needed, pending = set(), [tensor]
    while pending:
        index = producer.get(pending.pop())
        if index is None or index in needed:
            continue
        needed.add(index)
        pending.extend(nodes[index].input)
    digest = hashlib.sha256()
    for index in sorted(needed):
        for name in nodes[index].input:
            if name in initializers:
                digest.update(numpy_helper.to_array(initializers[name]).tobytes())
    return digest.hexdigest()[:20]
