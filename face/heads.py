"""The three softmax heads on top of a frozen backbone, and how their outputs become answers.

Age is one class per year (0-100, DEX's range); the estimate is the expectation of the
predicted distribution, with its 10th-90th percentiles as an interval, and the Adience
group is the one holding most of the probability.

Labels may be partial. Age learns from exact ages (a Gaussian label distribution) and from
age bins (the likelihood of the bin's probability mass, an interval label); race has
FairFace's 7 classes and learns from sets of them (UTKFace's Asian is {East Asian,
Southeast Asian}) by the likelihood of the set. UTKFace's 5 classes are sums of the 7, so
the two answers always agree. Heads trained before (5 race outputs) still load and answer.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import AGE_BINS, FAIRFACE_RACES, GENDERS, MAX_AGE, RACE_SETS, RACES
from .backbones.base import padded_batches
from .errors import ConfigError, WeightsError
from .quantification import encode_distribution

AGES = np.arange(MAX_AGE + 1, dtype=np.float32)
#: Adience's eight groups (seeds 000/004); gaps between groups go to the nearer group.
AGE_GROUPS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))


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


HEADS_MODEL_NAME = "howold_heads"


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


#: The layers build_heads makes, by name: a fine-tuned model holds them above its stages.
HEAD_LAYERS = ("shared", "age_hidden", "age", "gender_hidden", "gender", "race_hidden", "race")


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


def race5_probabilities(race: np.ndarray) -> np.ndarray:
    """UTKFace's 5 race probabilities from the head's: the same array for 5 outputs, sums of FairFace's 7."""
    race = np.asarray(race)
    if race.shape[-1] == len(RACES):
        return race
    return np.stack([race[..., list(members)].sum(axis=-1) for members in RACE_SETS], axis=-1)


# ---- turning probabilities into answers ------------------------------------------------


#: what the answer's age is: the mean or the median of the read-out distribution
AGE_POINTS = ("mean", "median")


@dataclass(frozen=True)
class AgeReadout:
    """How the age distribution p becomes the answer.

    q(a) ∝ (p(a) / prior(a)^alpha)^(1 / T), and the age is q's mean or median (`point`), its
    interval q's 10th-90th percentiles. The heads learn p(age | face) under the training set's
    age distribution, which piles up at 20-35, so p is pulled toward the middle (children read
    older, people over 40 younger); dividing by the training prior to the power `alpha` takes
    that pull out. The temperature T (> 1 wider, < 1 sharper) makes the 10-90% interval cover
    about 80% of true ages: one value, or one per age in `temperature_ages` (`temperatures`),
    interpolated at the face's age before the temperature. The median is not dragged by the
    long tail that a distribution has toward the far side of its ages (a child's toward adults).
    The identity (alpha 0, T 1, mean) is the distribution as the heads give it. Stored in a
    model's JSON sidecar under "readout" (see `from_metadata`).
    """

    alpha: float = 0.0
    temperature: float = 1.0
    prior: tuple[float, ...] | None = None  # 101 values, the training prior over ages 0-100
    point: str = "mean"
    temperature_ages: tuple[float, ...] = ()
    temperatures: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature <= 0 or any(t <= 0 for t in self.temperatures):
            raise ValueError(f"age readout temperatures must be positive, not {self.temperature} {list(self.temperatures)}")
        if self.alpha and (self.prior is None or len(self.prior) != len(AGES)):
            raise ValueError(f"age readout alpha {self.alpha} needs a prior of {len(AGES)} values")
        if self.point not in AGE_POINTS:
            raise ValueError(f"unknown age point {self.point!r}; choose from {AGE_POINTS}")
        if len(self.temperature_ages) != len(self.temperatures):
            raise ValueError("age readout: temperature_ages and temperatures differ in length")

    @property
    def identity(self) -> bool:
        return not self.alpha and self.temperature == 1.0 and not self.temperatures

    def apply(self, age_probabilities: np.ndarray) -> np.ndarray:
        """The read-out distributions q (N, 101), rows summing to 1."""
        probabilities = np.asarray(age_probabilities, np.float64)
        if self.identity:
            return probabilities
        log_q = np.log(np.clip(probabilities, 1e-12, None))
        if self.alpha:
            log_q = log_q - self.alpha * np.log(np.asarray(self.prior, np.float64))
        temperature = np.full((len(log_q), 1), self.temperature)
        if self.temperatures:
            before = _normalised(log_q)
            temperature = temperature * np.interp(self.point_of(before), self.temperature_ages, self.temperatures)[:, None]
        return _normalised(log_q / temperature)

    def point_of(self, distributions: np.ndarray) -> np.ndarray:
        """The age of each read-out distribution: its mean or median."""
        if self.point == "median":
            return age_percentiles(distributions, 0.5, 0.5)[:, 0].astype(np.float64)
        return expected_age(distributions)

    def to_dict(self) -> dict:
        entry = {"alpha": self.alpha, "temperature": self.temperature, "point": self.point}
        if self.temperatures:
            entry.update(temperature_ages=list(self.temperature_ages), temperatures=list(self.temperatures))
        entry["prior"] = None if self.prior is None else [round(float(v), 6) for v in self.prior]
        return entry

    @classmethod
    def from_dict(cls, entry: dict | None) -> "AgeReadout":
        if not entry:
            return cls()
        prior = entry.get("prior")
        return cls(
            float(entry.get("alpha", 0.0)),
            float(entry.get("temperature", 1.0)),
            None if prior is None else tuple(float(v) for v in prior),
            entry.get("point", "mean"),
            tuple(float(v) for v in entry.get("temperature_ages", ())),
            tuple(float(v) for v in entry.get("temperatures", ())),
        )

    @classmethod
    def from_metadata(cls, metadata: dict, name: str = "default") -> "AgeReadout":
        """The sidecar's readout: "default" (its "readout" entry; none: the identity), "raw"
        (the identity: the mean of the distribution as the heads give it), or any other name
        listed under its "readout" "options" (each a set of fields that replace the default's)."""
        entry = dict(metadata.get("readout") or {})
        options = entry.pop("options", {})
        if name == "raw":
            return cls()
        if name == "default":
            return cls.from_dict(entry)
        if name not in options:
            raise WeightsError(f"unknown age readout {name!r}; this model has {', '.join(['default', 'raw', *options])}")
        return cls.from_dict({**entry, **options[name]})


def _normalised(log_q: np.ndarray) -> np.ndarray:
    q = np.exp(log_q - log_q.max(axis=-1, keepdims=True))
    return q / q.sum(axis=-1, keepdims=True)


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


def expected_age(age_probabilities: np.ndarray) -> np.ndarray:
    return age_probabilities @ AGES


def age_percentiles(age_probabilities: np.ndarray, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """(N, 2) ages below which `low` and `high` of the probability lies, interpolated."""
    cdf = np.cumsum(np.asarray(age_probabilities, np.float64), axis=1)
    cdf = np.maximum.accumulate(cdf / cdf[:, -1:], axis=1)
    rows = np.arange(len(cdf))
    result = np.empty((len(cdf), 2), np.float32)
    for column, level in enumerate((low, high)):
        above = np.clip((cdf < level).sum(axis=1), 1, len(AGES) - 1)  # cdf[above - 1] < level <= cdf[above]
        before, after = cdf[rows, above - 1], cdf[rows, above]
        share = np.clip((level - before) / np.maximum(after - before, 1e-12), 0.0, 1.0)
        result[:, column] = AGES[above - 1] + share
    return result


def age_group_probabilities(age_probabilities: np.ndarray) -> np.ndarray:
    """(N, 8) probability of each Adience group; ages between groups join the nearer one."""
    edges = [(a + b) / 2 for (_, a), (b, _) in zip(AGE_GROUPS[:-1], AGE_GROUPS[1:])]
    group_of_age = np.searchsorted(np.array(edges), AGES, side="right")
    groups = np.zeros((len(age_probabilities), len(AGE_GROUPS)), np.float32)
    for group in range(len(AGE_GROUPS)):
        groups[:, group] = age_probabilities[:, group_of_age == group].sum(axis=1)
    return groups


def age_group_label(group: int) -> str:
    low, high = AGE_GROUPS[group]
    return f"{low}-{high}"


def interpret(outputs: dict[str, np.ndarray], readout: AgeReadout | None = None) -> list[dict]:
    """Per-face answers, JSON-serialisable, from the heads' probability arrays; the age ones
    (age, age_interval, age_group) from the distribution as `readout` reads it."""
    readout = readout or AgeReadout()
    age_probs = readout.apply(np.asarray(outputs["age"], np.float64))
    ages = readout.point_of(age_probs)
    intervals = age_percentiles(age_probs)
    groups = age_group_probabilities(age_probs)
    answers = []
    races = np.asarray(outputs["race"], np.float64)
    races5 = race5_probabilities(races)
    for i in range(len(age_probs)):
        gender = np.asarray(outputs["gender"][i], np.float64)
        race = races5[i]
        answers.append(
            {
                "age": round(float(ages[i]), 1),
                "age_interval": [round(float(intervals[i, 0]), 1), round(float(intervals[i, 1]), 1)],
                "age_group": age_group_label(int(groups[i].argmax())),
                "age_group_confidence": round(float(groups[i].max()), 4),
                "gender": GENDERS[int(gender.argmax())],
                "gender_confidence": round(float(gender.max()), 4),
                "race": RACES[int(race.argmax())],
                "race_confidences": {name: round(float(p), 4) for name, p in zip(RACES, race)},
                "age_distribution": encode_distribution(age_probs[i]),
            }
        )
        if races.shape[1] == len(FAIRFACE_RACES):
            answers[-1]["race_fairface"] = FAIRFACE_RACES[int(races[i].argmax())]
            answers[-1]["race_fairface_confidences"] = {name: round(float(p), 4) for name, p in zip(FAIRFACE_RACES, races[i])}
    return answers


# ---- files -------------------------------------------------------------------------------


class TrainedHeads:
    """Heads plus the sidecar that says which backbone and preprocessing they expect.

    With a `path` and no model, the Keras model loads on first use of `model`: the sidecar
    alone says what an exported ONNX file needs, so inference from it never imports Keras.
    """

    def __init__(self, model: object, metadata: dict, path: str | Path | None = None):
        self._model = model
        self.metadata = metadata
        self.path = Path(path) if path is not None else None

    @property
    def model(self):
        if self._model is None and self.path is not None:
            self._model = _load_keras_heads(self.path, self.metadata)
        return self._model

    @model.setter
    def model(self, model) -> None:
        self._model = model

    @property
    def backbone(self) -> str:
        return self.metadata["backbone"]["backbone"]

    @property
    def readout(self) -> AgeReadout:
        """The age readout its sidecar names (AgeReadout.from_metadata), the identity if none."""
        return AgeReadout.from_metadata(self.metadata)

    @property
    def boundary(self) -> str | None:
        """The backbone layer whose activations this model takes; None: the backbone's features."""
        return self.metadata.get("boundary")

    def features_of(self, backbone, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """What this model takes as input, computed by `backbone` from uint8 chips."""
        if self.boundary is None:
            return backbone.embed(chips, batch_size=batch_size)
        return backbone.activations(chips, (self.boundary,), batch_size=batch_size)[self.boundary]

    def check_backbone(self, backbone, path=None) -> None:
        """A WeightsError when `backbone` cannot feed this model."""
        path = path if path is not None else self.path
        expected = self.metadata.get("input_shape") or [self.metadata.get("backbone", {}).get("feature_size")]
        if self.boundary is not None:
            stages = getattr(backbone, "stages", ())
            if not stages or self.metadata["backbone"]["backbone"] != backbone.name:
                raise WeightsError(f"{path}: fine-tuned on {self.metadata['backbone']['backbone']!r} above its layer {self.boundary!r}; use --backbone {self.metadata['backbone']['backbone']}")
            actual = list(backbone.layer_shape(self.boundary))
        else:
            actual = [backbone.feature_size]
        if list(expected) != actual:
            raise WeightsError(f"{path}: expects inputs of shape {list(expected)}, backbone {backbone.name!r} gives {actual}")

    def predict(self, features: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Probabilities per head; batches padded to `padded_batches`' fixed sizes."""
        if len(features) == 0:
            return {"age": np.zeros((0, MAX_AGE + 1)), "gender": np.zeros((0, 2)), "race": np.zeros((0, race_classes_of(self.model)))}
        if getattr(self, "_forward", None) is None:
            import tensorflow as tf

            model = self.model
            self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True, autograph=False)
        parts = [(self._forward(batch), count) for batch, count in padded_batches(features, batch_size)]
        return {name: np.concatenate([np.asarray(p[name])[:count] for p, count in parts]) for name in ("age", "gender", "race")}


def race_classes_of(model) -> int:
    """How many races a heads model tells apart: 7 (FairFace's) or 5 (UTKFace's, older heads)."""
    output = model.output
    return int(output["race"].shape[-1]) if isinstance(output, dict) else len(RACES)


def predict_views(model, features: np.ndarray, views: tuple[int, ...] = (0, 1)) -> dict[str, np.ndarray]:
    """Head probabilities for (N, views, D) features, averaged over the given views (0, 1: flip TTA)."""
    heads = TrainedHeads(model, {})
    outputs = [heads.predict(features[:, view].astype(np.float32)) for view in views]
    return {name: np.mean([o[name] for o in outputs], axis=0) for name in outputs[0]}


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


def sidecar_path(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def save_heads(model, path: str | Path, metadata: dict, export: bool = True) -> Path:
    """Save a model and its sidecar; with `export`, also its ONNX file beside it
    (`onnx_export.export_heads`) when its backbone is a Keras network the export can
    translate, so that it runs without TensorFlow."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial.keras")
    model.save(temporary)
    temporary.replace(path)
    sidecar_path(path).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    if export:
        export_if_possible(path)
    return path


def export_if_possible(path: Path) -> Path | None:
    """The ONNX export of a saved model, or None (with a warning) where the export cannot
    translate it: Keras then runs it."""
    import warnings

    from .backbones import KerasBackbone, backbone_factory, create_backbone
    from .onnx_export import ExportError, export_heads

    name = json.loads(sidecar_path(path).read_text()).get("backbone", {}).get("backbone")
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


def load_heads(path: str | Path) -> TrainedHeads:
    """Load heads and their sidecar; a missing or broken file is a WeightsError naming it."""
    heads = read_heads(path)
    heads.model  # noqa: B018 - loads now, so that a broken file fails here
    return heads


def read_heads(path: str | Path) -> TrainedHeads:
    """Heads whose Keras model loads only when first used: the sidecar is read now (a
    WeightsError if the heads file or its sidecar is missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such heads file")
    try:
        metadata = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{sidecar_path(path)}: missing or unreadable sidecar ({error})") from None
    return TrainedHeads(None, metadata, path)


def _load_keras_heads(path: Path, metadata: dict):
    from .optional import require_keras

    keras = require_keras(f"{path.name} has no exported ONNX file, so Keras runs it")
    if metadata.get("boundary"):  # a fine-tuned part of a backbone: its custom layers must be known
        from .backbones import backbone_factory

        backbone_factory(metadata.get("backbone", {}).get("backbone", "")).register_keras_layers()
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for a bad file
        raise WeightsError(f"{path}: not a loadable Keras heads file ({type(error).__name__}: {error})") from None


def onnx_export_of(heads: TrainedHeads, key: str = "onnx") -> Path | None:
    """The ONNX file exported from these heads' `.keras` (sidecar entry `key`: "onnx"; an
    int8 variant may add its own), or None when there is none or the `.keras` file has
    changed since the export (its sha256 no longer matches the one recorded)."""
    entry = heads.metadata.get(key)
    if not entry or heads.path is None:
        return None
    path = heads.path.parent / entry["file"]
    if not path.is_file() or file_sha256(heads.path) != entry.get("keras_sha256"):
        return None
    return path


def heads_id(heads: TrainedHeads) -> str:
    """A short identity of the heads' weights (16 hex digits of the .keras file's sha256, as
    the sidecar records it at export): results and statistics say which model made them."""
    recorded = (heads.metadata.get("onnx") or {}).get("keras_sha256")
    return (recorded or (file_sha256(heads.path) if heads.path is not None else "unknown"))[:16]


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_dict(config: HeadsConfig) -> dict:
    return asdict(config)
