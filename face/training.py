"""`howold train`: fit the three heads on cached features of a frozen backbone.

Each epoch sees every stored view of every training image; mixup blends pairs of
feature vectors and their label distributions. BackupAndRestore makes a run killed with
kill -9 resume at its last finished epoch; the feature cache makes the restart cheap.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .backbones import DEFAULT_BACKBONE, Backbone, create_backbone
from .data import DEFAULT_DATA_DIR, GENDERS, MAX_AGE, RACES, load_dataset, split_dataset
from .evaluation import compute_metrics
from .features import AugmentConfig, extract_features
from .heads import HeadsConfig, age_distribution_targets, age_loss, build_heads, one_hot, predict_views, save_heads


@dataclass
class TrainConfig:
    data_dir: Path = DEFAULT_DATA_DIR
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
    limit: int | None = None
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


def make_targets(labels: dict[str, np.ndarray], heads: HeadsConfig) -> dict[str, np.ndarray]:
    return {
        "age": age_distribution_targets(labels["age"], heads.age_sigma),
        "gender": one_hot(labels["gender"], len(GENDERS), heads.label_smoothing),
        "race": one_hot(labels["race"], len(RACES), heads.label_smoothing),
    }


def mixup_batches(features: np.ndarray, targets: dict[str, np.ndarray], batch_size: int, alpha: float, seed: int):
    """Shuffled batches, mixed up pairwise with Beta(alpha, alpha) weights, all inside tf.data."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True).batch(batch_size)

    def mix(x, y):
        x = tf.cast(x, tf.float32)
        count = tf.shape(x)[0]
        first, second = tf.random.gamma([count, 1], alpha), tf.random.gamma([count, 1], alpha)
        weight = first / (first + second)  # a Beta(alpha, alpha) draw
        partner = tf.random.shuffle(tf.range(count))
        x = weight * x + (1 - weight) * tf.gather(x, partner)
        y = {name: weight * value + (1 - weight) * tf.gather(value, partner) for name, value in y.items()}
        return x, y

    def cast(x, y):
        return tf.cast(x, tf.float32), y

    return dataset.map(mix if alpha > 0 else cast, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def head_losses(heads_config: HeadsConfig) -> dict:
    import keras

    return {
        "age": age_loss(heads_config.age_expectation_weight),
        "gender": keras.losses.CategoricalCrossentropy(),
        "race": keras.losses.CategoricalCrossentropy(),
    }


def model_metadata(backbone: Backbone, heads_config: HeadsConfig, training: dict, report: dict, **placement) -> dict:
    """A trained model's sidecar: what it sits on (backbone, and where a fine-tuned model cuts
    in), its classes and heads, how it was trained and how it did on validation."""
    return {
        "backbone": backbone.describe(),
        **placement,
        "classes": {"age": [0, MAX_AGE], "gender": list(GENDERS), "race": list(RACES)},
        "heads": asdict(heads_config),
        "training": training,
        "validation": {k: report[k] for k in ("n", "age_mae", "age_cs5", "gender_accuracy", "race_accuracy")},
    }


HEAD_METRICS = {"gender": ["categorical_accuracy"], "race": ["categorical_accuracy"]}


def run_callbacks(run_dir: Path, patience: int, best_path: Path) -> list:
    """Resume after a kill, keep the best epoch (weights only for a .weights.h5 path), stop when
    stuck, log to CSV and TensorBoard.

    The backup is written last in each epoch, after the epoch's CSV row: a run killed between
    the two redoes that epoch, and the CSV rows of epochs the backup does not hold are dropped
    before the CSV logger appends, so history.csv keeps exactly one row per epoch.
    """
    import keras

    run_dir.mkdir(parents=True, exist_ok=True)
    trim_history(run_dir / "history.csv", run_dir / "backup")
    return [
        keras.callbacks.ModelCheckpoint(str(best_path), monitor="val_loss", save_best_only=True, save_weights_only=best_path.name.endswith(".weights.h5")),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False),
        # last: its on_train_begin restores (fit reads the epoch after every callback's), and
        # its on_epoch_end backs up an epoch only once that epoch is logged
        keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True),
    ]


def trim_history(history: Path, backup: Path) -> None:
    """Keep only the rows of history.csv for epochs that Keras's backup in `backup` has finished."""
    metadata = backup / "training_metadata.json"  # BackupAndRestore's {"epoch": epochs finished, ...}
    if not (metadata.is_file() and history.is_file()):
        return
    finished = int(json.loads(metadata.read_text())["epoch"])
    header, *rows = history.read_text().splitlines(keepends=True) or [""]

    def kept(row: str) -> bool:
        epoch = row.split(",", 1)[0]
        return row.endswith("\n") and epoch.isdigit() and int(epoch) < finished  # (a cut-off last row goes too)

    if not all(kept(row) for row in rows):
        history.write_text(header + "".join(row for row in rows if kept(row)))


def split_rows(dataset, config: TrainConfig):
    """The train and validation subsets and their row numbers in `dataset`."""
    train_set, validation_set = split_dataset(dataset, config.validation_fraction, config.seed)
    index_of = {face.path: i for i, face in enumerate(dataset.faces)}
    train_rows = np.array([index_of[f.path] for f in train_set.faces], dtype=np.int64)
    validation_rows = np.array([index_of[f.path] for f in validation_set.faces], dtype=np.int64)
    return train_set, validation_set, train_rows, validation_rows


def heads_config_of(config: TrainConfig, feature_size: int) -> HeadsConfig:
    return HeadsConfig(
        feature_size=feature_size,
        hidden_units=config.hidden_units,
        dropout=config.dropout,
        label_smoothing=config.label_smoothing,
        loss_weights=config.loss_weights,
    )


def training_metadata(config: TrainConfig, dataset, train_set, validation_set, **extra) -> dict:
    """The sidecar's "training" entry: the whole config, the split's sizes and what the run measured."""
    return {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k not in ("augment",)},
        "augment": asdict(config.augment),
        "train_images": len(train_set),
        "validation_images": len(validation_set),
        "skipped_names": len(dataset.skipped),
        **extra,
        "commit": git_commit(),
    }


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def train(config: TrainConfig) -> dict:
    """Train heads per `config`; returns the validation report saved beside the weights."""
    import keras

    keras.utils.set_random_seed(config.seed)
    started = time.time()
    dataset = load_dataset(config.data_dir, limit=config.limit)
    train_set, validation_set, train_rows, validation_rows = split_rows(dataset, config)
    backbone = create_backbone(config.backbone)
    features = extract_features(backbone, dataset, config.augment, cache_root=config.cache_root, progress=config.progress)
    extraction_seconds = time.time() - started

    heads_config = heads_config_of(config, backbone.feature_size)
    views = min(config.train_views or features.shape[1], features.shape[1])
    train_targets = make_targets(train_set.labels(), heads_config)
    train_x = features[train_rows, :views].reshape(len(train_rows) * views, -1)
    train_y = {name: np.repeat(value, views, axis=0) for name, value in train_targets.items()}
    validation_x = features[validation_rows, 0].astype(np.float32)
    validation_y = make_targets(validation_set.labels(), replace(heads_config, label_smoothing=0.0))

    model = build_heads(heads_config)
    batches = mixup_batches(train_x, train_y, config.batch_size, config.mixup_alpha, config.seed)
    steps_per_epoch = int(np.ceil(len(train_x) / config.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch, alpha=config.min_learning_rate / config.learning_rate
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=head_losses(heads_config), loss_weights=config.loss_weights, metrics=HEAD_METRICS)
    run_dir = config.run_dir()
    best_path = run_dir / "best.keras"
    callbacks = run_callbacks(run_dir, config.patience, best_path)
    fit_started = time.time()
    model.fit(
        batches,
        validation_data=(validation_x, validation_y),
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline reshuffles every epoch itself
        verbose=1 if config.progress else 0,
    )
    fit_seconds = time.time() - fit_started
    best = keras.models.load_model(best_path, compile=False) if best_path.exists() else model
    report = compute_metrics(predict_views(best, features[validation_rows], config.validation_views), validation_set.labels())
    training = training_metadata(config, dataset, train_set, validation_set, feature_seconds=round(extraction_seconds, 1), fit_seconds=round(fit_seconds, 1))
    metadata = model_metadata(backbone, heads_config, training, report)
    save_heads(best, config.resolved_output(backbone), metadata)
    (run_dir / "validation_report.json").write_text(json.dumps(report, indent=2))
    report["heads_path"] = str(config.resolved_output(backbone))
    return report
