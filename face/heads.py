"""The three softmax heads on top of a frozen backbone, as Keras trains them.

Age is one class per year (0-100, DEX's range). Labels may be partial. Age learns from exact
ages (a Gaussian label distribution) and from age bins (the likelihood of the bin's
probability mass, an interval label); race has FairFace's 7 classes and learns from sets of
them (UTKFace's Asian is {East Asian, Southeast Asian}) by the likelihood of the set.
How the trained heads' distributions become answers is `face.readout`'s; which files a
trained model is made of, `face.model_files`'.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import AGE_BINS, FAIRFACE_RACES, GENDERS, MAX_AGE, RACE_SETS, RACES
from .errors import ConfigError, WeightsError
from .model_files import HEAD_LAYERS, HEADS_MODEL_NAME, read_sidecar, write_sidecar
from .readout import AGES


@dataclass(frozen=True)
class HeadsConfig:
    """Shape of the heads and of their losses."""

    feature_size: int
    hidden_units: int = 512
    head_units: int = 256
    dropout: float = 0.4
    age_sigma: float = 2.0  # label-distribution width, in years (DLDL)
    age_expectation_weight: float = 0.05  # weight of |E[age] - age| next to the distribution loss
    label_smoothing: float = 0.05
    loss_weights: dict = field(default_factory=lambda: {"age": 1.0, "gender": 2.0, "race": 2.0})
    race_classes: int = len(FAIRFACE_RACES)  # 5 (UTKFace's) for heads trained before FairFace


def age_distribution_targets(ages: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian label distributions over 0..100 centred on each age (ages above 100 clip)."""
    ages = np.clip(np.asarray(ages, np.float32), 0, MAX_AGE)[:, None]
    weights = np.exp(-0.5 * ((AGES[None, :] - ages) / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def age_targets(ages: np.ndarray, age_bins: np.ndarray, sigma: float) -> np.ndarray:
    """(N, 2 * 101 + 1) targets of age_loss: [label distribution | bin mask | is-a-bin flag].

    Rows with an exact age (>= 0) fill the distribution; the others the mask of their bin
    (FairFace's, inclusive). Mixup blends rows linearly and the loss stays the mixture of losses.
    """
    ages, age_bins = np.asarray(ages), np.asarray(age_bins)
    exact = ages >= 0
    targets = np.zeros((len(ages), 2 * len(AGES) + 1), np.float32)
    if exact.any():
        targets[exact, : len(AGES)] = age_distribution_targets(ages[exact], sigma)
    for row in np.flatnonzero(~exact):
        low, high = AGE_BINS[int(age_bins[row])]
        targets[row, len(AGES) + low : len(AGES) + high + 1] = 1.0
        targets[row, -1] = 1.0
    return targets


def race_set_targets(races: np.ndarray, races7: np.ndarray, classes: int = len(FAIRFACE_RACES)) -> np.ndarray:
    """(N, classes) masks of the races each label allows: FairFace's own class where known
    (race7 >= 0), else the set UTKFace's class stands for. With 5 classes: one-hot of `races`."""
    if classes == len(RACES):
        return one_hot(races, classes)
    targets = np.zeros((len(races), classes), np.float32)
    for row, (race, race7) in enumerate(zip(np.asarray(races), np.asarray(races7))):
        targets[row, [int(race7)] if race7 >= 0 else list(RACE_SETS[int(race)])] = 1.0
    return targets


def one_hot(labels: np.ndarray, classes: int, smoothing: float = 0.0) -> np.ndarray:
    targets = np.full((len(labels), classes), smoothing / classes, np.float32)
    targets[np.arange(len(labels)), np.asarray(labels, int)] += 1.0 - smoothing
    return targets


def build_heads(config: HeadsConfig):
    """features -> shared layer -> {age: 101, gender: 2, race: 5} softmax outputs."""
    import keras
    from keras import layers

    features = keras.Input((config.feature_size,), name="features")
    shared = layers.Dense(config.hidden_units, activation="relu", name="shared")(features)
    shared = layers.Dropout(config.dropout, name="shared_dropout")(shared)
    outputs = {}
    for head, classes in (("age", MAX_AGE + 1), ("gender", len(GENDERS)), ("race", config.race_classes)):
        hidden = layers.Dense(config.head_units, activation="relu", name=f"{head}_hidden")(shared)
        hidden = layers.Dropout(config.dropout, name=f"{head}_dropout")(hidden)
        outputs[head] = layers.Dense(classes, activation="softmax", name=head)(hidden)
    return keras.Model(features, outputs, name=HEADS_MODEL_NAME)


def heads_part(model):
    """The build_heads model inside a fine-tuned model, or the model itself."""
    nested = [layer for layer in model.layers if layer.name == HEADS_MODEL_NAME]
    return nested[0] if nested else model


def copy_head_weights(source, target) -> None:
    """Copy the heads' layers from one Keras model to another: new heads trained on a fine-tuned
    model's features (backbone "finetuned-features") onto that model, or its heads out of it.
    A fine-tuned model holds its heads as a nested model of build_heads' name."""
    source, target = heads_part(source), heads_part(target)
    for name in HEAD_LAYERS:
        weights = source.get_layer(name).get_weights()
        layer = target.get_layer(name)
        if [w.shape for w in weights] != [tuple(v.shape) for v in layer.weights]:
            raise WeightsError(f"layer {name!r}: weights of shapes {[w.shape for w in weights]} do not fit {[tuple(v.shape) for v in layer.weights]}")
        layer.set_weights(weights)


def age_loss(expectation_weight: float):
    """For exact ages: cross-entropy to the label distribution plus a small L1 on the expected
    age (DLDL-v2); for age bins: -log of the probability mass in the bin. Targets: age_targets
    (or bare label distributions, for exact ages only)."""
    from keras import ops

    ages = ops.convert_to_tensor(AGES)
    size = len(AGES)

    def loss(y_true, y_pred):
        if y_true.shape[-1] == size:  # label distributions alone (exact ages only)
            y_true = ops.concatenate([y_true, ops.zeros_like(y_true), ops.zeros_like(y_true[:, :1])], axis=-1)
        distribution, mask, is_bin = y_true[:, :size], y_true[:, size : 2 * size], y_true[:, -1]
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        entropy = -ops.sum(distribution * log_p, axis=-1)
        exact = ops.sum(distribution, axis=-1)  # 1 for an exact age, its mixup weight when mixed
        expectation_error = ops.abs(ops.sum(y_pred * ages, axis=-1) * exact - ops.sum(distribution * ages, axis=-1))
        in_bin = ops.sum(y_pred * mask, axis=-1) / ops.maximum(is_bin, 1e-7)
        interval = -is_bin * ops.log(ops.clip(in_bin, 1e-7, 1.0))
        return entropy + expectation_weight * expectation_error + interval

    return loss


def race_set_loss(smoothing: float = 0.0):
    """-log of the probability of the label's set of races (partial labels), smoothed like
    label smoothing: (1 - s) of it plus s times the mean cross-entropy over all classes.

    A mixup of two labels gives the likelihood of the mixture, w P(set1) + (1 - w) P(set2).
    """
    from keras import ops

    def loss(y_true, y_pred):
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        in_set = -ops.log(ops.clip(ops.sum(y_true * y_pred, axis=-1), 1e-7, 1.0))
        return (1.0 - smoothing) * in_set - smoothing * ops.mean(log_p, axis=-1)

    return loss


def set_accuracy(y_true, y_pred):
    """Whether the most probable class lies in the label's set (mixed labels: in either set)."""
    from keras import ops

    picked = ops.one_hot(ops.argmax(y_pred, axis=-1), ops.shape(y_pred)[-1])
    return ops.cast(ops.sum(picked * y_true, axis=-1) > 0, "float32")


def training_age_prior(ages: np.ndarray, age_bins: np.ndarray, sigma: float = 2.0, floor: float = 0.02) -> np.ndarray:
    """The age distribution the heads saw in training, (101,): exact ages as their label
    distributions (heads.age_distribution_targets); a face with only an age bin spread over
    the bin in proportion to the exact ages inside it (flat where the bin has none); mixed
    with `floor` of a flat distribution, so that dividing by it stays finite."""
    ages, age_bins = np.asarray(ages), np.asarray(age_bins)
    exact = ages >= 0
    prior = age_distribution_targets(ages[exact], sigma).sum(axis=0).astype(np.float64) if exact.any() else np.zeros(len(AGES))
    bin_counts = np.bincount(age_bins[~exact & (age_bins >= 0)], minlength=len(AGE_BINS))
    for index, (low, high) in enumerate(AGE_BINS):
        if bin_counts[index]:
            inside = prior[low : high + 1].copy() if prior[low : high + 1].sum() > 0 else np.ones(high - low + 1)
            prior[low : high + 1] += bin_counts[index] * inside / inside.sum()
    prior /= prior.sum()
    prior = (1 - floor) * prior + floor / len(AGES)
    return prior / prior.sum()


def save_heads(model, path: str | Path, metadata: dict, export: bool = True) -> Path:
    """Save a model and its sidecar; with `export`, also its ONNX file beside it
    (`onnx_export.export_heads`) when its backbone is a Keras network the export can
    translate, so that it runs without TensorFlow."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial.keras")
    model.save(temporary)
    temporary.replace(path)
    write_sidecar(path, metadata)
    if export:
        export_if_possible(path)
    return path


def export_if_possible(path: Path) -> Path | None:
    """The ONNX export of a saved model, or None (with a warning) where the export cannot
    translate it: Keras then runs it."""
    import warnings

    from .backbones import KerasBackbone, backbone_factory, create_backbone
    from .errors import ExportError
    from .onnx_export import export_heads

    name = read_sidecar(path).get("backbone", {}).get("backbone")
    try:
        factory = backbone_factory(name) if name else None
    except ConfigError:  # a backbone this install does not know: nothing to translate
        return None
    if not (isinstance(factory, type) and issubclass(factory, KerasBackbone)):
        return None
    backbone = create_backbone(name)
    try:
        return export_heads(path, backbone)
    except ExportError as error:
        warnings.warn(f"{path}: no ONNX export, Keras will run it ({error})", stacklevel=2)
        return None


def store_float16(path: str | Path) -> Path:
    """Rewrite a saved .keras model with its float32 weights stored as float16, compressed.

    Keras casts them back to the float32 variables at load, so nothing else changes: half the
    file (the fine-tuned dlib stages: 20 MB -> 8 MB) for predictions within ~1e-3 in probability.
    """
    import io
    import zipfile

    import h5py

    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    source, target = io.BytesIO(members["model.weights.h5"]), io.BytesIO()
    with h5py.File(source, "r") as full, h5py.File(target, "w") as half:

        def copy(name: str, item) -> None:
            if isinstance(item, h5py.Dataset):
                values = item[()]
                half.create_dataset(name, data=values.astype(np.float16) if values.dtype == np.float32 else values)
            else:
                half.require_group(name)
            half[name].attrs.update(dict(item.attrs))

        full.visititems(copy)
        half.attrs.update(dict(full.attrs))
    members["model.weights.h5"] = target.getvalue()
    temporary = path.with_name(path.stem + ".partial.keras")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    temporary.replace(path)
    return path


def config_dict(config: HeadsConfig) -> dict:
    return asdict(config)
