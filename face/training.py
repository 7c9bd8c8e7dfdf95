"""`howold train`: fit the three heads on cached features of a frozen backbone.

Training may mix datasets (UTKFace and FairFace): each is read by name, split with the same
seed on its own, cached on its own, and reported on its own; their labels meet in one set
of targets (exact ages or age bins, 5-way race labels as sets of FairFace's 7).
Each epoch sees every stored view of every training image; mixup blends pairs of
feature vectors and their label distributions. BackupAndRestore makes a run killed with
kill -9 resume at its last finished epoch; the feature cache makes the restart cheap.
Caches, checkpoints and backups are written whole or not at all (atomic.py, checkpoints.py), so a full disk
ends the run with a one-line WriteError, and the same command resumes from what was finished.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .atomic import replacing, write_text
from .backbones import DEFAULT_BACKBONE, Backbone, create_backbone
from .data import DATASETS, DEFAULT_DATA_DIR, FAIRFACE_RACES, GENDERS, MAX_AGE, RACES, Dataset, load_named, parse_data_spec, split_dataset
from .errors import ConfigError
from .checkpoints import resumable_writes, run_callbacks, save_named
from .evaluation import DEFAULT_CROP_DETECTOR, box_counts, compute_metrics, headline, quantification_stats
from .features import AugmentConfig, StackedArrays, extract_activations
from .heads import (
    HeadsConfig,
    age_loss,
    age_targets,
    build_heads,
    copy_head_weights,
    one_hot,
    race_set_loss,
    race_set_targets,
    set_accuracy,
)
from .model import predict_views


@dataclass
class TrainConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    #: several datasets, each "NAME=DIR" (utkface, fairface, fairface-extra) or a bare DIR; empty: data_dir alone
    datasets: tuple = ()
    #: the face detector for datasets of loose crops (FairFace's)
    detector: str = DEFAULT_CROP_DETECTOR
    backbone: str = DEFAULT_BACKBONE
    #: where the best heads go; default weights/<backbone's heads name>.keras
    output: Path | None = None
    logs_dir: Path = Path("logs")
    run_name: str | None = None
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    patience: int = 10
    mixup_alpha: float = 0.2
    validation_fraction: float = 0.15
    seed: int = 42
    #: use only the first N images of every dataset, or of the datasets named: {"fairface": 8000}
    limit: int | dict | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: train on the first N cached views only (1: no augmentation, 2: plain and mirrored)
    train_views: int | None = None
    #: views averaged for validation predictions: (0,) plain, (0, 1) flip test-time augmentation
    validation_views: tuple[int, ...] = (0, 1)
    hidden_units: int = 512
    dropout: float = 0.4
    label_smoothing: float = 0.05
    loss_weights: dict = field(default_factory=lambda: {"age": 1.0, "gender": 2.0, "race": 2.0})
    cache_root: Path | None = None
    progress: bool = True
    #: progressive unfreezing (see unfreezing.py): per phase, how many of the backbone's last
    #: stages train (an int, a stage name meaning "from this stage on", or "all"); () = heads only
    unfreeze: tuple = ()
    unfreeze_epochs: int = 8
    unfreeze_learning_rate: float = 3e-4
    #: the last stage learns at this fraction of the heads' learning rate, the one before at its square...
    backbone_lr_factor: float = 0.1
    unfreeze_batch_size: int = 128
    #: heads to warm-start from; default the shipped heads of the backbone (trained first if none)
    init_heads: Path | None = None

    def resolved_output(self, backbone: Backbone) -> Path:
        return Path(self.output) if self.output else Path("weights") / f"{backbone.heads_name}.keras"

    def run_dir(self) -> Path:
        return Path(self.logs_dir) / (self.run_name or self.backbone)

    def data_specs(self) -> list[tuple[str, Path]]:
        """(dataset name, folder) for each dataset to train on."""
        return [parse_data_spec(spec) for spec in (self.datasets or (self.data_dir,))]


@dataclass
class DataPart:
    """One dataset of a training mixture, its split, and its rows in the mixture's arrays."""

    kind: str
    dataset: Dataset
    train: Dataset
    validation: Dataset
    offset: int  # where its images start in the mixture
    train_rows: np.ndarray
    validation_rows: np.ndarray


def load_parts(config: TrainConfig) -> list[DataPart]:
    """Every dataset of `config`, each split on its own with the config's seed."""
    parts, offset = [], 0
    for kind, root in config.data_specs():
        dataset = load_named(kind, root, limit=config.limit.get(kind) if isinstance(config.limit, dict) else config.limit)
        train_set, validation_set, train_rows, validation_rows = split_rows(dataset, config, DATASETS[kind].train_only)
        parts.append(DataPart(kind, dataset, train_set, validation_set, offset, train_rows + offset, validation_rows + offset))
        offset += len(dataset)
    kinds = [part.kind for part in parts]
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"--data names a dataset twice ({', '.join(kinds)}); give each once")
    return parts


def mixture_activations(backbone: Backbone, parts: list[DataPart], layers: tuple, config: TrainConfig) -> dict:
    """Cached activations of all the parts' images, stacked in mixture order (memory-mapped)."""
    per_part = [
        extract_activations(backbone, part.dataset, layers, config.augment, cache_root=config.cache_root, progress=config.progress, detector=config.detector)
        for part in parts
    ]
    return {layer: StackedArrays([values[layer] for values in per_part]) for layer in layers}


def mixture_labels(datasets: list[Dataset]) -> dict[str, np.ndarray]:
    labels = [dataset.labels() for dataset in datasets]
    return {name: np.concatenate([part[name] for part in labels]) for name in labels[0]}


def mixture_rows(parts: list[DataPart], which: str) -> np.ndarray:
    return np.concatenate([getattr(part, f"{which}_rows") for part in parts])


def validation_report(parts: list[DataPart], probabilities: dict[str, np.ndarray], config: TrainConfig) -> dict:
    """Metrics over all validation images, then per dataset (each with its groups), with the
    number of loose crops whose face the detector missed."""
    report = compute_metrics(probabilities, mixture_labels([part.validation for part in parts]))
    report["datasets"], start = {}, 0
    for part in parts:
        if not len(part.validation):  # a train-only dataset
            continue
        stop = start + len(part.validation)
        report["datasets"][part.kind] = compute_metrics({k: v[start:stop] for k, v in probabilities.items()}, part.validation.labels())
        report["datasets"][part.kind]["faces"] = box_counts(part.dataset, config.detector, config.cache_root)
        start = stop
    return report


def store_validation_stats(heads_path: Path, parts: list[DataPart], probabilities: dict[str, np.ndarray]) -> None:
    """Each dataset's quantification statistics (what `howold report` corrects shares with), from
    the saved model's validation probabilities, into its sidecar: a trained model carries its own."""
    from .model_files import ModelFile, store_quantification_stats
    from .readout import AgeReadout

    readout, start = AgeReadout.from_metadata(ModelFile.read(heads_path).metadata), 0
    for part in (part for part in parts if len(part.validation)):
        stop = start + len(part.validation)
        stats = quantification_stats({k: v[start:stop] for k, v in probabilities.items()}, part.validation.labels(), readout)
        store_quantification_stats(heads_path, part.kind, stats)
        start = stop


def predict_rows(model, values, rows: np.ndarray, views: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Flip-averaged (by `views`) probabilities for some rows of cached activations."""
    return predict_views(model, values[rows, : max(views) + 1], views)


def make_targets(labels: dict[str, np.ndarray], heads: HeadsConfig) -> dict[str, np.ndarray]:
    """Training targets: see heads.age_targets and heads.race_set_targets; gender one-hot, smoothed."""
    if heads.race_classes == len(RACES):  # heads of UTKFace's 5 races: smoothed one-hot, as before
        race = one_hot(labels["race"], len(RACES), heads.label_smoothing)
    else:  # sets of FairFace's 7; race_set_loss smooths
        race = race_set_targets(labels["race"], labels["race7"], heads.race_classes)
    return {
        "age": age_targets(labels["age"], labels["age_bin"], heads.age_sigma),
        "gender": one_hot(labels["gender"], len(GENDERS), heads.label_smoothing),
        "race": race,
    }


def mixup_batches(features: np.ndarray, targets: dict[str, np.ndarray], batch_size: int, alpha: float, seed: int, sample_weights: np.ndarray | None = None):
    """Shuffled batches, mixed up pairwise with Beta(alpha, alpha) weights, all inside tf.data;
    `sample_weights` (per row) are mixed alongside and weigh each row's losses."""
    import tensorflow as tf

    weighted = sample_weights is not None
    rows = (features, targets, np.asarray(sample_weights, np.float32)) if weighted else (features, targets)
    dataset = tf.data.Dataset.from_tensor_slices(rows)
    dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True).batch(batch_size)

    def mix(x, y, w=None):
        x = tf.cast(x, tf.float32)
        count = tf.shape(x)[0]
        first, second = tf.random.gamma([count, 1], alpha), tf.random.gamma([count, 1], alpha)
        weight = first / (first + second)  # a Beta(alpha, alpha) draw
        partner = tf.random.shuffle(tf.range(count))
        x = weight * x + (1 - weight) * tf.gather(x, partner)
        y = {name: weight * value + (1 - weight) * tf.gather(value, partner) for name, value in y.items()}
        if w is None:
            return x, y
        return x, y, weight[:, 0] * w + (1 - weight[:, 0]) * tf.gather(w, partner)

    def cast(x, y, w=None):
        return (tf.cast(x, tf.float32), y) if w is None else (tf.cast(x, tf.float32), y, w)

    return dataset.map(mix if alpha > 0 else cast, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def head_losses(heads_config: HeadsConfig) -> dict:
    import keras

    return {
        "age": age_loss(heads_config.age_expectation_weight),
        "gender": keras.losses.CategoricalCrossentropy(),
        "race": race_set_loss(heads_config.label_smoothing) if heads_config.race_classes != len(RACES) else keras.losses.CategoricalCrossentropy(),
    }


def model_metadata(backbone: Backbone, heads_config: HeadsConfig, training: dict, report: dict, **placement) -> dict:
    """A trained model's sidecar: what it sits on (backbone, and where a fine-tuned model cuts
    in), its classes and heads, how it was trained and how it did on validation."""
    return {
        "backbone": backbone.describe(),
        **placement,
        # "race" names the classes of the `race` answer (UTKFace's 5, sums of the head's 7 where it has FairFace's)
        "classes": {
            "age": [0, MAX_AGE], "gender": list(GENDERS), "race": list(RACES),
            **({"race_fairface": list(FAIRFACE_RACES)} if heads_config.race_classes == len(FAIRFACE_RACES) else {}),
        },
        "heads": asdict(heads_config),
        "training": training,
        "validation": {
            **headline(report),
            **({"datasets": {kind: headline(part) for kind, part in report["datasets"].items()}} if "datasets" in report else {}),
        },
    }


HEAD_METRICS = {"gender": ["categorical_accuracy"], "race": [set_accuracy]}


def split_rows(dataset, config: TrainConfig, train_only: bool = False):
    """The train and validation subsets and their row numbers in `dataset` (`train_only`: all train)."""
    train_set, validation_set = (dataset, dataset.subset([])) if train_only else split_dataset(dataset, config.validation_fraction, config.seed)
    index_of = {face.path: i for i, face in enumerate(dataset.faces)}
    train_rows = np.array([index_of[f.path] for f in train_set.faces], dtype=np.int64)
    validation_rows = np.array([index_of[f.path] for f in validation_set.faces], dtype=np.int64)
    return train_set, validation_set, train_rows, validation_rows


def heads_config_of(config: TrainConfig, feature_size: int) -> HeadsConfig:
    return HeadsConfig(
        feature_size=feature_size,
        race_classes=len(FAIRFACE_RACES),
        hidden_units=config.hidden_units,
        dropout=config.dropout,
        label_smoothing=config.label_smoothing,
        loss_weights=config.loss_weights,
    )


def training_metadata(config: TrainConfig, parts: list[DataPart], **extra) -> dict:
    """The sidecar's "training" entry: the whole config, the splits' sizes and what the run measured."""
    return {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k not in ("augment", "datasets")},
        "datasets": {part.kind: {"data": str(part.dataset.root), "train_images": len(part.train), "validation_images": len(part.validation), "skipped_names": len(part.dataset.skipped)} for part in parts},
        "augment": asdict(config.augment),
        "train_images": sum(len(part.train) for part in parts),
        "validation_images": sum(len(part.validation) for part in parts),
        "skipped_names": sum(len(part.dataset.skipped) for part in parts),
        **extra,
        "commit": git_commit(),
    }


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def fit_heads(
    heads_config: HeadsConfig, config: TrainConfig, train_x: np.ndarray, train_y: dict, validation: tuple, best_path: Path,
    sample_weights: np.ndarray | None = None, start_from=None,
) -> float:
    """Fit heads on features (rows x features) with mixup and a cosine schedule, keeping the best
    epoch at `best_path` (resumable: Keras's backup lives in its folder); the seconds it took.
    `start_from`: a model whose heads' weights they start from (heads.copy_head_weights), else new."""
    import keras

    model = build_heads(heads_config)
    if start_from is not None:
        copy_head_weights(start_from, model)
    batches = mixup_batches(train_x, train_y, config.batch_size, config.mixup_alpha, config.seed, sample_weights)
    steps_per_epoch = int(np.ceil(len(train_x) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=config.min_learning_rate / config.learning_rate
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=head_losses(heads_config), loss_weights=config.loss_weights, metrics=HEAD_METRICS)
    callbacks = run_callbacks(best_path.parent, config.patience, best_path)
    started = time.time()
    model.fit(
        batches,
        validation_data=validation,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline reshuffles every epoch itself
        verbose=1 if config.progress else 0,
    )
    if not best_path.exists():  # no epoch had a finite validation loss
        with replacing(best_path) as partial:
            model.save(partial)
    return time.time() - started


def train(config: TrainConfig) -> dict:
    """Train heads per `config`; returns the validation report saved beside the weights.

    A write that fails (a full disk) raises WriteError; the same config then resumes: the
    finished cache chunks are read back, fitting continues from its last backed-up epoch, and a
    fit that finished before the heads could be saved is not run again.
    """
    with resumable_writes():
        return _train(config)


def _train(config: TrainConfig) -> dict:
    import keras

    keras.utils.set_random_seed(config.seed)
    started = time.time()
    parts = load_parts(config)
    train_rows, validation_rows = mixture_rows(parts, "train"), mixture_rows(parts, "validation")
    backbone = create_backbone(config.backbone)
    features = mixture_activations(backbone, parts, (None,), config)[None]
    extraction_seconds = time.time() - started

    heads_config = heads_config_of(config, backbone.feature_size)
    validation_x = features[validation_rows, 0].astype(np.float32)
    validation_y = make_targets(mixture_labels([part.validation for part in parts]), replace(heads_config, label_smoothing=0.0))
    run_dir = config.run_dir()
    best_path = run_dir / "best.keras"
    # written once fitting ends, removed once the heads are saved: a run that failed in between
    # (a full disk) does not fit again (Keras's backup is gone by then, so it would start over)
    fitted = run_dir / "fitted.json"
    if fitted.is_file() and best_path.is_file():
        fit_seconds = json.loads(fitted.read_text())["fit_seconds"]
    else:
        views = min(config.train_views or features.shape[1], features.shape[1])
        train_targets = make_targets(mixture_labels([part.train for part in parts]), heads_config)
        train_x = features[train_rows, :views].reshape(len(train_rows) * views, -1)
        train_y = {name: np.repeat(value, views, axis=0) for name, value in train_targets.items()}
        fit_seconds = fit_heads(heads_config, config, train_x, train_y, (validation_x, validation_y), best_path)
        write_text(fitted, json.dumps({"fit_seconds": fit_seconds}))
    best = keras.models.load_model(best_path, compile=False)
    probabilities = predict_rows(best, features, validation_rows, config.validation_views)
    report = validation_report(parts, probabilities, config)
    training = training_metadata(config, parts, feature_seconds=round(extraction_seconds, 1), fit_seconds=round(fit_seconds, 1))
    save_named(best, config.resolved_output(backbone), model_metadata(backbone, heads_config, training, report))
    store_validation_stats(config.resolved_output(backbone), parts, probabilities)
    write_text(run_dir / "validation_report.json", json.dumps(report, indent=2))
    fitted.unlink()
    report["heads_path"] = str(config.resolved_output(backbone))
    return report


def parse_limits(items: list[str] | None) -> int | dict | None:
    """--limit N (every dataset) or --limit NAME=N (repeatable) as TrainConfig.limit."""
    if not items:
        return None
    try:
        if len(items) == 1 and "=" not in items[0]:
            return int(items[0])
        return {name: int(count) for name, count in (item.split("=", 1) for item in items)}
    except ValueError:
        raise ConfigError(f"--limit {' '.join(items)}: want N, or NAME=N per dataset") from None
