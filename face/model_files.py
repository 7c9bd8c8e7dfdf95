"""A trained model's files: the `.keras` model, its JSON sidecar, and the `.onnx` (and
`.onnx.data`) exported from it.

Why one room: the Analyzer, the runtimes, training and export all need to know which file
answers for a model, and whether an export is still the export of its `.keras` (the
sidecar records the sha256 of the `.keras` it came from). The sidecar also holds what the
model was trained on (backbone, boundary, input shape) and its age readout settings.
Plain files and JSON: no Keras, TensorFlow or ONNX here, so every path can stand on it.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import WeightsError
from .paths import file_sha256

#: The name of the model `heads.build_heads` makes; a fine-tuned model holds it nested.
HEADS_MODEL_NAME = "howold_heads"
#: The layers the heads model holds, by name: a fine-tuned model holds them above its stages.
HEAD_LAYERS = ("shared", "age_hidden", "age", "gender_hidden", "gender", "race_hidden", "race")
#: The model's outputs, in this order in every graph and runtime.
OUTPUTS = ("age", "gender", "race")


def sidecar_path(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def read_sidecar(path: str | Path) -> dict:
    """The sidecar of the model file `path`: a WeightsError if the model file or its sidecar
    is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such heads file")
    try:
        return json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{sidecar_path(path)}: missing or unreadable sidecar ({error})") from None


def write_sidecar(path: str | Path, metadata: dict) -> Path:
    """Write the sidecar of the model file `path` whole (the old one stays if the write fails),
    keys sorted, so that diffs stay small."""
    from .atomic import write_text

    target = sidecar_path(Path(path))
    write_text(target, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return target


class ModelFile:
    """A model's `.keras` path and its sidecar (`metadata`): what a model was trained on and
    which files answer for it, known without loading the model."""

    def __init__(self, metadata: dict, path: str | Path | None = None):
        self.metadata = metadata
        self.path = Path(path) if path is not None else None

    @classmethod
    def read(cls, path: str | Path) -> "ModelFile":
        """The model file at `path` with its sidecar (`read_sidecar`'s WeightsErrors)."""
        return cls(read_sidecar(path), path)

    @property
    def backbone(self) -> str:
        return self.metadata["backbone"]["backbone"]

    @property
    def boundary(self) -> str | None:
        """The backbone layer whose activations this model takes; None: the backbone's features."""
        return self.metadata.get("boundary")


def heads_id(heads: ModelFile) -> str:
    """A short identity of the heads' weights (16 hex digits of the .keras file's sha256, as
    the sidecar records it at export): results and statistics say which model made them."""
    recorded = (heads.metadata.get("onnx") or {}).get("keras_sha256")
    return (recorded or (file_sha256(heads.path) if heads.path is not None else "unknown"))[:16]


def default_heads_path(backbone, frozen: bool = False) -> Path:
    """Shipped heads for a backbone.

    A fine-tuned model of the backbone itself (weights/<name>-finetuned.keras, from progressive
    unfreezing) comes first unless `frozen`; then heads on its frozen features, shared by
    backbones that compute the same features (weights/<heads_name>.keras).
    """
    from .paths import shipped_weights_dir

    own = shipped_weights_dir() / finetuned_name(backbone)
    if not frozen and own.is_file():
        return own
    return shipped_weights_dir() / f"{backbone.heads_name}.keras"


def finetuned_name(backbone) -> str:
    return f"{backbone.name}-finetuned.keras"


def onnx_export_of(heads, key: str = "onnx") -> Path | None:
    """The ONNX file exported from these heads' `.keras` (sidecar entry `key`: "onnx"; an
    int8 variant may add its own), or None when there is none or the `.keras` file has
    changed since the export (its sha256 no longer matches the one recorded). `heads`: any
    object with the model's `metadata` (its sidecar) and `path` (a `model.TrainedHeads`)."""
    entry = heads.metadata.get(key)
    if not entry or heads.path is None:
        return None
    path = heads.path.parent / entry["file"]
    if not path.is_file() or file_sha256(heads.path) != entry.get("keras_sha256"):
        return None
    return path


def readout_entry(metadata: dict, name: str = "default") -> dict:
    """The age readout settings a sidecar stores under "readout", as `readout.AgeReadout.from_dict`
    takes them: "default" (the entry itself; none: {} for the identity), "raw" ({}: the
    distribution as the heads give it), or a name listed under its "options" (each a set of
    fields that replace the default's). A WeightsError for a name the model does not list."""
    entry = dict(metadata.get("readout") or {})
    options = entry.pop("options", {})
    if name == "raw":
        return {}
    if name == "default":
        return entry
    if name not in options:
        raise WeightsError(f"unknown age readout {name!r}; this model has {', '.join(['default', 'raw', *options])}")
    return {**entry, **options[name]}


def store_quantification_stats(heads_path: str | Path, dataset: str, stats: dict) -> Path:
    """Put one dataset's quantification statistics (what `howold report` corrects shares with)
    into the model's sidecar, replacing that dataset's earlier ones, stamped with the heads'
    identity (`heads_id`)."""
    heads = ModelFile.read(heads_path)
    entry = heads.metadata.setdefault("quantification", {"datasets": {}})
    entry["model"] = heads_id(heads)
    entry["readout"] = "default"
    entry["datasets"][dataset] = stats
    return write_sidecar(heads_path, heads.metadata)
