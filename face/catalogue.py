"""The models a user can choose by name: the shipped ones (the package's `weights/`) and the
user's own (`$HOWOLD_HOME/models/`), each a `.keras` file with its JSON sidecar, named by its
file stem.

Why a catalogue: a model is its heads file plus the backbone its sidecar names, and its
sidecar also holds how it did on validation; choosing "dlib-resnet" by name should need
neither a path nor a matching `--backbone`. A user model may not take a shipped model's
name (a ConfigError says so): a name always means the same weights, whoever asks.
Plain files and JSON only (no Keras, TensorFlow or ONNX), so listing models is instant.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from .errors import ConfigError, WeightsError
from .model_files import ModelFile
from .paths import howold_home, shipped_weights_dir

#: The model `Analyzer()` reads with when given neither a model nor heads: the default
#: backbone's fine-tuned model (`model_files.default_heads_path`).
DEFAULT_MODEL = "dlib-resnet-keras-finetuned"
#: The sidecar's validation figures shown beside each model, so that users can choose.
HEADLINE_FIGURES = ("age_mae", "gender_accuracy")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalogue. `figures`: its sidecar's headline validation figures
    (`HEADLINE_FIGURES`, None where it has none) and the dataset they were measured on
    (None: the whole validation mixture)."""

    name: str
    path: Path
    backbone: str
    default: bool
    shipped: bool
    figures: dict

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "backbone": self.backbone, "default": self.default, "shipped": self.shipped, "figures": dict(self.figures)}

    def describe(self) -> str:
        """One line for `howold models`: name, backbone, default mark and figures."""
        mae, accuracy = self.figures.get("age_mae"), self.figures.get("gender_accuracy")
        figures = ", ".join(part for part in (
            f"age MAE {mae:.2f}" if mae is not None else "",
            f"gender {accuracy:.1%}" if accuracy is not None else "",
        ) if part)
        where = f" on {self.figures['dataset']}" if figures and self.figures.get("dataset") else ""
        mark = " (default)" if self.default else ""
        return f"{self.name}{mark}  backbone {self.backbone}" + (f"  validation{where}: {figures}" if figures else "") + ("" if self.shipped else f"  [{self.path}]")


def user_models_dir() -> Path:
    """Where a user's own models go: $HOWOLD_HOME/models (not created here)."""
    return howold_home() / "models"


def headline_figures(metadata: dict) -> dict:
    """The sidecar's validation age MAE and gender accuracy: the whole validation mixture's
    where the sidecar has them, else UTKFace's, else the first dataset's."""
    validation = metadata.get("validation") or {}
    datasets = validation.get("datasets") or {}
    source, dataset = validation, None
    if not any(validation.get(key) is not None for key in HEADLINE_FIGURES) and datasets:
        dataset = "utkface" if "utkface" in datasets else next(iter(datasets))
        source = datasets[dataset]
    return {"dataset": dataset, **{key: source.get(key) for key in HEADLINE_FIGURES}}


def read_entry(path: str | Path, shipped: bool = False) -> ModelEntry:
    """The catalogue entry of the model file at `path` (WeightsError: no such file, or its
    sidecar is missing, unreadable or names no backbone)."""
    path = Path(path)
    model = ModelFile.read(path)
    try:
        backbone = model.backbone
    except (KeyError, TypeError):
        raise WeightsError(f"{path.with_suffix('.json')}: the sidecar names no backbone (backbone.backbone)") from None
    return ModelEntry(path.stem, path, backbone, shipped and path.stem == DEFAULT_MODEL, shipped, headline_figures(model.metadata))


def list_models() -> list[ModelEntry]:
    """Every model: the shipped ones, then the user's (`user_models_dir`), by name. A
    WeightsError for a model file whose sidecar cannot be read, a ConfigError for a user
    model with a shipped model's name."""
    shipped = [read_entry(path, shipped=True) for path in sorted(shipped_weights_dir().glob("*.keras"))]
    names = {entry.name for entry in shipped}
    folder = user_models_dir()
    users = [read_entry(path) for path in sorted(folder.glob("*.keras"))] if folder.is_dir() else []
    for entry in users:
        if entry.name in names:
            raise ConfigError(f"{entry.path}: a shipped model is called {entry.name!r} already; rename the file (and its .json sidecar)")
    return shipped + users


def find_model(name: str) -> ModelEntry:
    """The model called `name` (a ConfigError naming the known ones if there is none)."""
    models = list_models()
    for entry in models:
        if entry.name == name:
            return entry
    raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(entry.name for entry in models)} (see `howold models`)")


def is_model_path(name_or_path: str | Path) -> bool:
    """Whether `name_or_path` means a file rather than a catalogue name: a path, or a name ending in .keras."""
    text = str(name_or_path)
    return isinstance(name_or_path, Path) or text.endswith(".keras") or "/" in text or "\\" in text


def model_entry(name_or_path: str | Path) -> ModelEntry:
    """The model called `name_or_path`, or the `.keras` file it points to (its name its stem)."""
    if not is_model_path(name_or_path):
        return find_model(str(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.suffix != ".keras":
        raise ConfigError(f"{path}: a model is a .keras file with its .json sidecar")
    return read_entry(path, shipped=path.resolve().parent == shipped_weights_dir().resolve())


def resolve_model(name_or_path: str | Path) -> tuple[Path, str]:
    """(the heads file, the backbone name) of a model given by name or `.keras` path."""
    entry = model_entry(name_or_path)
    return entry.path, entry.backbone

