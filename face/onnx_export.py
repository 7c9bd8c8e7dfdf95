"""A trained model's ONNX file: the graph `keras_onnx` translates, written beside its `.keras`.

Why: with the file, inference needs neither TensorFlow nor Keras (`howold export`, and
`howold train` when it saves a model). Float16 where that is exact, ONNX external data where
a file would pass 12 MB; checked against Keras by running the written file in ONNX Runtime,
and recorded in the sidecar with the sha256 of the `.keras` it came from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .backbones import DEFAULT_BACKBONE, create_backbone
from .keras_onnx import ExportError, check_against_keras, export_onnx, translate
from .model import load_heads
from .model_files import default_heads_path, file_sha256, read_sidecar, write_sidecar
from .onnx_session import create_session

__all__ = ["ExportError", "MAX_FILE_BYTES", "export_heads", "export_onnx", "save_model", "store_float16"]

#: No shipped file may be larger: a bigger graph keeps its largest tensors in `<name>.onnx.data`.
MAX_FILE_BYTES = 12_000_000


def store_float16(model) -> None:
    """Initializers whose values float16 holds exactly (a `.keras` saved by
    `heads.store_float16`) are stored as float16, each cast back to float32 by a Cast node
    that ONNX Runtime folds into a constant when the session loads: half the bytes, the
    same numbers. The others stay float32 (dlib's own weights, say)."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for tensor in model.graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        if values.size < 2 or not np.array_equal(half.astype(np.float32), values):
            continue
        name = tensor.name
        stored = f"{name}/float16"
        casts.append(helper.make_node("Cast", [stored], [name], name=f"{name}/cast", to=TensorProto.FLOAT))
        tensor.CopyFrom(numpy_helper.from_array(half, stored))
    nodes = casts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def save_model(model, path: Path) -> list[Path]:
    """Write `model` to `path`; while it would exceed MAX_FILE_BYTES its largest tensors go
    to `<path>.data` instead (ONNX's external data, read by ONNX Runtime beside the file).
    Returns the files written."""
    import onnx
    from onnx.external_data_helper import set_external_data, write_external_data_tensors

    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    tensors = sorted(model.graph.initializer, key=lambda t: len(t.raw_data), reverse=True)
    size, moved = model.ByteSize(), 0
    for tensor in tensors:
        if size <= MAX_FILE_BYTES:
            break
        size -= len(tensor.raw_data)
        set_external_data(tensor, location=data.name)
        moved += 1
    temporary = path.with_name(path.stem + ".partial.onnx")
    if moved:
        write_external_data_tensors(model, str(path.parent))  # writes data, clears raw_data
    onnx.save_model(model, str(temporary))
    temporary.replace(path)
    if moved:
        data.chmod(0o644)  # written private by onnx; as readable as the model file
    return [path, data] if moved else [path]


def export_heads(heads_path: str | Path | None = None, backbone=None, output: str | Path | None = None) -> Path:
    """The whole inference graph of a `.keras` model (the backbone's frozen part, the
    fine-tuned part and the heads: chips in, probabilities out) as an ONNX file beside it
    (default `<name>.onnx`), checked against Keras, and recorded in its sidecar with the
    sha256 of the `.keras` it came from, so that a changed model is not answered from a
    stale export. `backbone`: a Backbone or its name (default: the one the sidecar names);
    `heads_path` None: the backbone's shipped model (the default backbone's)."""
    if isinstance(backbone, str):
        backbone = create_backbone(backbone)
    if heads_path is None:
        backbone = backbone or create_backbone(DEFAULT_BACKBONE)
        heads_path = default_heads_path(backbone)
    heads_path = Path(heads_path)
    heads = load_heads(heads_path)
    backbone = backbone or create_backbone(heads.backbone)
    heads.check_backbone(backbone)
    graph, models = translate(heads, backbone)
    store_float16(graph)
    path = Path(output) if output else heads_path.with_suffix(".onnx")
    files = save_model(graph, path)
    check_against_keras(create_session(str(path)), models, backbone)
    entry = {"file": path.name, "sha256": file_sha256(path), "keras_sha256": file_sha256(heads_path)}
    if len(files) > 1:
        entry.update(data=files[1].name, data_sha256=file_sha256(files[1]))
    metadata = read_sidecar(heads_path)
    metadata["onnx"] = entry
    write_sidecar(heads_path, metadata)
    return path
