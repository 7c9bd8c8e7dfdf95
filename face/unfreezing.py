"""Progressive unfreezing: fine-tune the last stages of a Keras backbone together with the heads.

The schedule runs phases: heads only (the frozen-backbone training of training.py, or heads
given to warm-start from), then the last stage, then the last two, and so on. A phase that
trains the last k stages cuts the network at their boundary (`KerasBackbone.boundary`). The
stages below are frozen, so their output for each stored view of each image never changes:
one pass over the data caches it on disk (float16, see features.py), and every epoch runs only
the unfrozen stages and the heads. One pass fills the caches of every phase at once.

Choices:
* an epoch is one pass over the training images, each seen as one view drawn at random
  from its cached views (plain, mirrored, random shift/scale/erasing); with `train_views=1`
  only the plain view is used;
* mixup blends the boundary activations of pairs (manifold mixup) and their label
  distributions;
* pretrained normalisation stays in inference mode (its statistics and scale are not
  trained; dlib's affine layers are fixed anyway), networks trained from scratch train theirs;
* discriminative learning rates (`LayerwiseAdam`): the last stage learns at
  `backbone_lr_factor` (0.1) times the heads' rate, the stage before at 0.01 times, and so
  on; a network trained from scratch learns at the heads' rate throughout. Why so low:
  dlib's kernels are tiny (mean |w| 4e-4 to 3e-3; batch norm is folded into its affine
  layers) and Adam moves every weight by about the learning rate per step, so level 4 at
  9e-5 (0.3 times 3e-4) blew the loss up from 5 to 34 in one step; at 3e-6 it stays put;
* each phase starts from the best weights of the one before, has its own checkpoints,
  CSV log and TensorBoard folder under logs/<run>/unfreeze-<k>/, and resumes after a kill or
  a full disk (a one-line WriteError): a phase counts as finished once its done.json is
  written, last and whole.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from .atomic import write_text
from .backbones import KerasBackbone, create_backbone
from .checkpoints import resumable_writes, run_callbacks, save_named
from .errors import ConfigError, WeightsError
from .features import StackedArrays, cache_bytes, cache_folder
from .heads import build_heads
from .model import load_heads, race_classes_of
from .model_files import default_heads_path, finetuned_name
from .training import (
    HEAD_METRICS,
    TrainConfig,
    head_losses,
    headline,
    heads_config_of,
    load_parts,
    make_targets,
    mixture_activations,
    mixture_labels,
    mixture_rows,
    model_metadata,
    predict_rows,
    store_validation_stats,
    train,
    training_metadata,
    validation_report,
)


@keras.saving.register_keras_serializable(package="howold")
class LayerwiseAdam(keras.optimizers.Adam):
    """Adam where the listed variables (by path) learn at their own fraction of the learning rate.

    Scaling gradients would not do: Adam's steps do not depend on the gradients' scale.
    """

    def __init__(self, *args, variable_factors: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.variable_factors = dict(variable_factors or {})

    def build(self, variables):
        super().build(variables)
        # update_step may be handed the backend's variable, which has no path: go by index
        self._factor_of_index = {index: self.variable_factors[v.path] for index, v in enumerate(variables) if v.path in self.variable_factors}

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factor_of_index.get(self._get_variable_index(variable))
        if factor is not None:
            learning_rate = learning_rate * factor
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "variable_factors": self.variable_factors}


def stage_learning_rate_factors(backbone: KerasBackbone, top, factor: float) -> dict[str, float]:
    """Discriminative fine-tuning (ULMFiT): the last stage learns at `factor` times the heads'
    rate, the one before at factor**2, and so on; from-scratch networks all at the heads' rate."""
    names = [layer.name for layer in backbone.model.layers]
    ends = [names.index(stage) for stage in backbone.stages]
    factors = {}
    for layer in top.layers:
        if layer.name not in names:
            continue
        position = names.index(layer.name)
        stage = next((i for i, end in enumerate(ends) if position <= end), len(ends) - 1)
        away = len(ends) - stage  # 1 for the last stage
        for variable in layer.trainable_variables:
            factors[variable.path] = factor**away if backbone.pretrained else 1.0
    return factors


def parse_schedule(schedule, backbone: KerasBackbone) -> tuple[int, ...]:
    """Phases as counts of unfrozen last stages; items are ints, stage names or "all"."""
    phases = []
    for item in schedule:
        item = str(item).strip()
        if item == "all":
            count = len(backbone.stages)
        elif item.isdigit():
            count = int(item)
        elif item in backbone.stages:
            count = len(backbone.stages) - backbone.stages.index(item)
        else:
            raise ConfigError(f"unfreeze phase {item!r}: give a number of last stages, 'all', or a stage of {backbone.name} ({', '.join(backbone.stages)})")
        backbone.boundary(count)  # checks the range
        if count == 0:
            raise ConfigError("unfreeze phases count stages to train; heads-only training is `howold train` without --unfreeze")
        if phases and count <= phases[-1]:
            raise ConfigError(f"unfreeze phases must unfreeze more stages each time, got {list(schedule)}")
        phases.append(count)
    if not phases:
        raise ConfigError("empty unfreeze schedule")
    return tuple(phases)


class ActivationBatches(keras.utils.PyDataset):
    """Batches of cached boundary activations: one random view per image, optional mixup."""

    def __init__(self, activations: np.ndarray, rows: np.ndarray, targets: dict, batch_size: int, views: int, mixup_alpha: float, seed: int):
        super().__init__()
        self.activations, self.rows, self.targets = activations, rows, targets
        self.batch_size, self.views, self.mixup_alpha, self.seed = batch_size, views, mixup_alpha, seed
        self.epoch = 0
        self._shuffle()

    def _shuffle(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.order = rng.permutation(len(self.rows))
        self.view_of = rng.integers(0, self.views, len(self.rows))
        self.rng = rng

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.activations[self.rows[picked], self.view_of[picked]].astype(np.float32)
        y = {name: value[picked] for name, value in self.targets.items()}
        if self.mixup_alpha > 0:
            weight = self.rng.beta(self.mixup_alpha, self.mixup_alpha, len(picked)).astype(np.float32)
            partner = self.rng.permutation(len(picked))
            x = _blend(x, x[partner], weight)
            y = {name: _blend(value, value[partner], weight) for name, value in y.items()}
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._shuffle()
        if isinstance(self.activations, StackedArrays):
            self.activations.release()


def _blend(first: np.ndarray, second: np.ndarray, weight: np.ndarray) -> np.ndarray:
    weight = weight.reshape((-1,) + (1,) * (first.ndim - 1))
    return weight * first + (1 - weight) * second


def phase_model(backbone: KerasBackbone, boundary: str, heads):
    """boundary activations -> unfrozen stages -> heads, sharing layers with both; and the stages."""
    top = backbone.top_model(boundary)
    for layer in top.layers:
        layer.trainable = True
        if backbone.pretrained and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode: keep the pretrained statistics
    heads.trainable = True
    inputs = keras.Input(backbone.layer_shape(boundary), name=f"{boundary}_activations")
    return keras.Model(inputs, heads(top(inputs)), name=f"howold_above_{boundary}"), top


def starting_heads(config: TrainConfig, backbone: KerasBackbone, path: Path | None):
    """Heads to warm-start from: those at `path` (warm_start_path's), else frozen heads trained
    now; fresh for from-scratch backbones."""
    if not backbone.pretrained:
        return build_heads(heads_config_of(config, backbone.feature_size))
    return load_heads(path or _frozen_heads(config)).model


def warm_start_path(config: TrainConfig, backbone: KerasBackbone) -> Path | None:
    """The heads file to warm-start from: given, shipped, or trained by an earlier try of this
    run; None when frozen heads must be trained first."""
    path = Path(config.init_heads) if config.init_heads else default_heads_path(backbone, frozen=True)
    if path.is_file():
        loaded = load_heads(path)
        if loaded.metadata.get("boundary") or loaded.metadata.get("backbone", {}).get("feature_size") != backbone.feature_size:
            raise WeightsError(f"{path}: not heads on {backbone.name}'s {backbone.feature_size} features, cannot warm-start from it")
        wanted = heads_config_of(config, backbone.feature_size).race_classes
        if race_classes_of(loaded.model) == wanted:
            return path
        if config.init_heads:
            raise WeightsError(f"{path}: heads with {race_classes_of(loaded.model)} races, these are trained with {wanted}; warm-start from heads trained by this version")
        # the shipped frozen heads predate FairFace's 7 races: train the frozen heads first
    elif config.init_heads:
        return path  # load_heads names the missing file
    trained = _frozen_heads_path(config)
    return trained if trained.is_file() else None


def _frozen_heads_path(config: TrainConfig) -> Path:
    return config.run_dir() / "frozen_heads.keras"


def _frozen_heads(config: TrainConfig) -> Path:
    """Heads trained on the frozen backbone for this run, once: a resumed run (after a kill or a
    full disk) finds them in its folder (saved whole: save_heads renames a finished file)."""
    path = _frozen_heads_path(config)
    if not path.is_file():
        train(replace(config, unfreeze=(), output=path, run_name=f"{config.run_dir().name}/heads"))
    return path


def fine_tune(config: TrainConfig) -> dict:
    """Run the unfreezing schedule of `config`; returns the last phase's validation report.

    A write that fails (a full disk) raises WriteError; the same config then resumes: finished
    cache chunks and phases are kept, and the phase in progress continues from its backup."""
    with resumable_writes():
        return _fine_tune(config)


def _fine_tune(config: TrainConfig) -> dict:
    keras.utils.set_random_seed(config.seed)
    started = time.time()
    backbone = create_backbone(config.backbone)
    if not isinstance(backbone, KerasBackbone):
        raise ConfigError(f"backbone {backbone.name!r} is not a Keras network, so it cannot be unfrozen; use dlib-resnet-keras")
    phases = parse_schedule(config.unfreeze, backbone)
    boundaries = {count: backbone.boundary(count) for count in phases}
    parts = load_parts(config)
    train_rows, validation_rows = mixture_rows(parts, "train"), mixture_rows(parts, "validation")
    start = warm_start_path(config, backbone) if backbone.pretrained else None
    # frozen heads still to train read the features: the same pass over the images fills their cache
    layers = tuple(boundaries.values())
    if backbone.pretrained and start is None:
        layers += (None,)
    activations = mixture_activations(backbone, parts, layers, config)
    heads = starting_heads(config, backbone, start)
    sizes = {
        boundary: {part.kind: cache_bytes(cache_folder(backbone, part.dataset, config.augment, boundary, config.cache_root, config.detector)) for part in parts}
        for boundary in boundaries.values()
    }
    extraction_seconds = time.time() - started

    heads_config = heads_config_of(config, backbone.feature_size)
    train_targets = make_targets(mixture_labels([part.train for part in parts]), heads_config)
    validation_targets = make_targets(mixture_labels([part.validation for part in parts]), replace(heads_config, label_smoothing=0.0))
    views = min(config.train_views or config.augment.views, config.augment.views)
    output = Path(config.output) if config.output else Path("weights") / finetuned_name(backbone)
    phase_reports = []
    for count in phases:
        boundary = boundaries[count]
        model, top = phase_model(backbone, boundary, heads)
        run_dir = config.run_dir() / f"unfreeze-{count}"
        best_path = run_dir / "best.weights.h5"
        done_path = run_dir / "done.json"
        if done_path.exists():  # finished before an interruption: take its best weights
            model.load_weights(best_path)
            phase_reports.append(json.loads(done_path.read_text()))
            continue
        batches = ActivationBatches(activations[boundary], train_rows, train_targets, config.unfreeze_batch_size, views, config.mixup_alpha if views > 1 else 0.0, config.seed)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.unfreeze_learning_rate, decay_steps=config.unfreeze_epochs * len(batches), alpha=config.min_learning_rate / config.unfreeze_learning_rate
        )
        factors = stage_learning_rate_factors(backbone, top, config.backbone_lr_factor)
        model.compile(
            optimizer=LayerwiseAdam(schedule, variable_factors=factors),
            loss=head_losses(heads_config),
            loss_weights=config.loss_weights,
            metrics=HEAD_METRICS,
        )
        callbacks = run_callbacks(run_dir, config.patience, best_path)
        timer = EpochTimer(run_dir / "epoch_seconds.json")
        fit_started = time.time()
        model.fit(
            batches,
            validation_data=(activations[boundary][validation_rows, 0].astype(np.float32), validation_targets),
            epochs=config.unfreeze_epochs,
            callbacks=callbacks + [timer],
            verbose=1 if config.progress else 0,
        )
        if best_path.exists():
            model.load_weights(best_path)
        report = validation_report(parts, predict_rows(model, activations[boundary], validation_rows, config.validation_views), config)
        summary = {
            "unfrozen_stages": count,
            "boundary": boundary,
            "trainable_backbone_parameters": int(sum(np.prod(v.shape) for v in top.trainable_variables)),
            "cache_bytes": sum(sizes[boundary].values()),
            "cache_bytes_by_dataset": sizes[boundary],
            "epochs": len(timer.seconds),
            "seconds_per_epoch": round(float(np.mean(timer.seconds)), 1) if timer.seconds else None,
            "fit_seconds": round(time.time() - fit_started, 1),
            **headline(report),
            "datasets": {kind: headline(part) for kind, part in report["datasets"].items()},
        }
        write_text(run_dir / "validation_report.json", json.dumps(report, indent=2))
        write_text(done_path, json.dumps(summary, indent=2))
        phase_reports.append(summary)
        if config.progress:
            print(json.dumps(summary), flush=True)

    last_boundary = boundaries[phases[-1]]
    model, _ = phase_model(backbone, last_boundary, heads)
    probabilities = predict_rows(model, activations[last_boundary], validation_rows, config.validation_views)
    report = validation_report(parts, probabilities, config)
    training = training_metadata(config, parts, extraction_seconds=round(extraction_seconds, 1), phases=phase_reports)
    metadata = model_metadata(backbone, heads_config, training, report, boundary=last_boundary, input_shape=list(backbone.layer_shape(last_boundary)))
    save_named(model, output, metadata)
    store_validation_stats(output, parts, probabilities)
    write_text(config.run_dir() / "validation_report.json", json.dumps(report, indent=2))
    report["heads_path"] = str(output)
    report["phases"] = phase_reports
    return report


class EpochTimer(keras.callbacks.Callback):
    """Seconds per finished epoch, kept in a file so a resumed run reports them all."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.seconds = json.loads(path.read_text()) if path.exists() else []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.time() - self.started, 2))
        write_text(self.path, json.dumps(self.seconds))
