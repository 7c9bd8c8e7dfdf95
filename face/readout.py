"""How the heads' probability distributions become answers: the age read from its
distribution (`AgeReadout`: mean or median, percentiles, Adience groups), UTKFace's five
races as sums of FairFace's seven, and `interpret`, which makes the per-face answer.

Pure numpy: every analysis runs it, and evaluation reads its figures the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import FAIRFACE_RACES, GENDERS, MAX_AGE, RACE_SETS, RACES
from .model_files import readout_entry
from .quantification import encode_distribution

AGES = np.arange(MAX_AGE + 1, dtype=np.float32)
#: Adience's eight groups (seeds 000/004); gaps between groups go to the nearer group.
AGE_GROUPS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))


def race5_probabilities(race: np.ndarray) -> np.ndarray:
    """UTKFace's 5 race probabilities from the head's: the same array for 5 outputs, sums of FairFace's 7."""
    race = np.asarray(race)
    if race.shape[-1] == len(RACES):
        return race
    return np.stack([race[..., list(members)].sum(axis=-1) for members in RACE_SETS], axis=-1)



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
        return cls.from_dict(readout_entry(metadata, name))


def _normalised(log_q: np.ndarray) -> np.ndarray:
    q = np.exp(log_q - log_q.max(axis=-1, keepdims=True))
    return q / q.sum(axis=-1, keepdims=True)


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
