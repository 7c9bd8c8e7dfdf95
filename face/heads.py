"""The three softmax heads on top of a frozen backbone, and how their outputs become answers.

Age is one class per year (0-100, DEX's range); the estimate is the expectation of the
predicted distribution, with its 10th-90th percentiles as an interval, and the Adience
group is the one holding most of the probability.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import GENDERS, MAX_AGE, RACES
from .backbones.base import padded_batches
from .errors import WeightsError

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


def age_distribution_targets(ages: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian label distributions over 0..100 centred on each age (ages above 100 clip)."""
    ages = np.clip(np.asarray(ages, np.float32), 0, MAX_AGE)[:, None]
    weights = np.exp(-0.5 * ((AGES[None, :] - ages) / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


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
    for head, classes in (("age", MAX_AGE + 1), ("gender", len(GENDERS)), ("race", len(RACES))):
        hidden = layers.Dense(config.head_units, activation="relu", name=f"{head}_hidden")(shared)
        hidden = layers.Dropout(config.dropout, name=f"{head}_dropout")(hidden)
        outputs[head] = layers.Dense(classes, activation="softmax", name=head)(hidden)
    return keras.Model(features, outputs, name="howold_heads")


def age_loss(expectation_weight: float):
    """Cross-entropy to the label distribution plus a small L1 on the expected age (DLDL-v2)."""
    import keras
    from keras import ops

    ages = ops.convert_to_tensor(AGES)

    def loss(y_true, y_pred):
        entropy = keras.losses.categorical_crossentropy(y_true, y_pred)
        expectation_error = ops.abs(ops.sum(y_pred * ages, axis=-1) - ops.sum(y_true * ages, axis=-1))
        return entropy + expectation_weight * expectation_error

    return loss


# ---- turning probabilities into answers ------------------------------------------------


def expected_age(age_probabilities: np.ndarray) -> np.ndarray:
    return age_probabilities @ AGES


def age_percentiles(age_probabilities: np.ndarray, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """(N, 2) ages below which `low` and `high` of the probability lies, interpolated."""
    cumulative = np.cumsum(age_probabilities, axis=1)
    result = np.empty((len(age_probabilities), 2), np.float32)
    for row, cdf in enumerate(cumulative):
        cdf = np.maximum.accumulate(cdf / cdf[-1])
        result[row] = np.interp([low, high], cdf, AGES)
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


def interpret(outputs: dict[str, np.ndarray]) -> list[dict]:
    """Per-face answers, JSON-serialisable, from the heads' probability arrays."""
    age_probs = np.asarray(outputs["age"], np.float64)
    ages = expected_age(age_probs)
    intervals = age_percentiles(age_probs)
    groups = age_group_probabilities(age_probs)
    answers = []
    for i in range(len(age_probs)):
        gender = np.asarray(outputs["gender"][i], np.float64)
        race = np.asarray(outputs["race"][i], np.float64)
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
            }
        )
    return answers


# ---- files -------------------------------------------------------------------------------


@dataclass
class TrainedHeads:
    """Heads plus the sidecar that says which backbone and preprocessing they expect."""

    model: object
    metadata: dict

    @property
    def backbone(self) -> str:
        return self.metadata["backbone"]["backbone"]

    @property
    def boundary(self) -> str | None:
        """The backbone layer whose activations this model takes; None: the backbone's features."""
        return self.metadata.get("boundary")

    def features_of(self, backbone, chips: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """What this model takes as input, computed by `backbone` from uint8 chips."""
        if self.boundary is None:
            return backbone.embed(chips, batch_size=batch_size)
        return backbone.activations(chips, (self.boundary,), batch_size=batch_size)[self.boundary]

    def check_backbone(self, backbone, path) -> None:
        """A WeightsError when `backbone` cannot feed this model."""
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
            return {"age": np.zeros((0, MAX_AGE + 1)), "gender": np.zeros((0, 2)), "race": np.zeros((0, 5))}
        if getattr(self, "_forward", None) is None:
            import tensorflow as tf

            model = self.model
            self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True, autograph=False)
        parts = [(self._forward(batch), count) for batch, count in padded_batches(features, batch_size)]
        return {name: np.concatenate([np.asarray(p[name])[:count] for p, count in parts]) for name in ("age", "gender", "race")}


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


def save_heads(model, path: str | Path, metadata: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".partial.keras")
    model.save(temporary)
    temporary.replace(path)
    sidecar_path(path).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path


def load_heads(path: str | Path) -> TrainedHeads:
    """Load heads and their sidecar; a missing or broken file is a WeightsError naming it."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such heads file")
    try:
        metadata = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError) as error:
        raise WeightsError(f"{sidecar_path(path)}: missing or unreadable sidecar ({error})") from None
    if metadata.get("boundary"):  # a fine-tuned part of a backbone: its custom layers must be known
        from .backbones import backbone_factory

        backbone_factory(metadata.get("backbone", {}).get("backbone", ""))
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for a bad file
        raise WeightsError(f"{path}: not a loadable Keras heads file ({type(error).__name__}: {error})") from None
    return TrainedHeads(model, metadata)


def config_dict(config: HeadsConfig) -> dict:
    return asdict(config)
