"""What `Analyzer` returns, field by field: documentation only, nothing imports this module.

The web API's `/analyze` answers with the same face dicts (see its OpenAPI document at `/openapi.json`).
"""
from __future__ import annotations

from typing import TypedDict


class FaceResult(TypedDict, total=False):
    """One face, as `Analyzer.analyze` returns it (a list of these, largest face first; `[]` when there is none).

    Every confidence is a probability in 0..1, rounded to 4 decimals; ages are in years, rounded to 0.1.
    The probabilities come from softmax heads trained on UTKFace and FairFace: they are the model's belief
    about the datasets' labels, not a measurement of the person (see the model card).
    """

    box: list[int]
    """[left, top, right, bottom] in the original image's pixels (after EXIF rotation)."""
    detection_confidence: float | None
    """The detector's score for this face (YuNet's probability by default); `None` for boxes you passed in."""
    age: float
    """The age read from the predicted distribution over 0-100 years. By default its median after
    dividing out the training set's age distribution (to the power in the model's sidecar), so
    that no age band is pulled toward the common training ages; `age_readout="least-error"` gives
    the plain median, `"raw"` the plain expectation (as in DEX)."""
    age_interval: list[float]
    """[low, high]: the 10th and 90th percentiles of that distribution, its width calibrated by age
    band on validation faces so that it holds the true age about 80% of the time."""
    age_group: str
    """The Adience age group ("0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100") holding most probability."""
    age_group_confidence: float
    """The probability mass of `age_group`."""
    gender: str
    """"male" or "female": the dataset's binary label as the model reads the face, not a person's gender identity."""
    gender_confidence: float
    """The probability of `gender`."""
    race: str
    """UTKFace's five classes: White, Black, Asian, Indian, Others; perceived appearance, not identity or ancestry."""
    race_confidences: dict[str, float]
    """The probability of each of the five classes; they sum to 1."""
    race_fairface: str
    """FairFace's seven classes (White, Black, East Asian, Southeast Asian, Indian, Latino_Hispanic, Middle Eastern);
    only from heads with seven races, such as the default model's. The five classes are sums of these
    (Asian = East + Southeast Asian, Others = Latino_Hispanic + Middle Eastern), so the two answers agree."""
    race_fairface_confidences: dict[str, float]
    """The probability of each of the seven classes."""
    age_distribution: list[int]
    """The age distribution `age` and `age_interval` are read from: 101 whole numbers, the per-mille
    probability of each year 0..100 (they sum to about 1000). `howold report` sums them into age bands."""


class StreamResult(TypedDict, total=False):
    """One image, as `Analyzer.analyze_stream` and `analyze_many` yield it and as each line of a results JSONL holds it."""

    source: str
    """The path as given, or a description of an in-memory image."""
    model: str
    """Which model read the faces: 16 hex digits of its weights' sha256 (`model_files.heads_id`). `howold report`
    corrects shares with that model's statistics, so it refuses a file mixing models. Older files lack it."""
    faces: list[FaceResult]
    """The image's faces, as `Analyzer.analyze` gives them; absent when `error` is set."""
    error: str
    """Why this image could not be analysed (one line); the other images go on."""
