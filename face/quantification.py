"""Shares of a whole collection, corrected for the model's errors (quantification), with intervals.

Counting predicted labels is biased wherever the model errs: a gender classifier right on 90%
of men and of women reports 74% women on a collection of 80%. The methods here correct it
with statistics measured on validation faces (stored in the model's sidecar, `ClassStats`):

- "cc": classify and count, the naive share (what a script over the labels gives);
- "acc": adjusted classify and count: the counted shares are M^T p, with M[i, j] the share of
  validation faces of true class i labelled j; p solves it;
- "pacc": probabilistic adjusted: the same with the mean probabilities and M[i, j] the mean
  probability of j over validation faces of class i;
- "rpacc": pacc regularised (Tikhonov): |M^T p - mean|^2 + RIDGE |p - mean|^2, which keeps
  neighbouring age bands, confused by the model, from trading noise;
- "em": the prior re-estimated by expectation-maximisation (Saerens, Latinne and Decaestecker,
  2002), each face's probabilities re-weighted by the new prior over the validation one.

Every estimate is projected onto the simplex (non-negative shares that sum to 1). The 90%
interval is a bootstrap over the collection's faces and, at the same time, over the
validation faces the correction was fitted on (each row of the validation matrix drawn from a
Dirichlet of its counts), so a nearly singular matrix gives a wide interval, not an error.

Pure numpy: nothing here reads files or knows the model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("cc", "acc", "pacc", "rpacc", "em")
#: the method `howold report` uses, chosen on benchmarks/bench_report_quantification.py
DEFAULT_METHOD = "rpacc"
#: rpacc's pull toward the mean probabilities, against the noise that inverting a matrix of
#: much-confused classes (neighbouring age bands) amplifies; chosen on the same benchmark
RIDGE = 0.03
#: one-year ages of the age head, 0..100
YEARS = 101


# ---- statistics from validation faces --------------------------------------------------


@dataclass
class ClassStats:
    """What a correction needs of one attribute: per true class (rows), the faces labelled
    each class (`counted`) and the summed probability of each class (`mass`)."""

    classes: tuple[str, ...]
    counted: np.ndarray
    mass: np.ndarray

    @property
    def faces(self) -> np.ndarray:
        return self.counted.sum(axis=1)

    def to_dict(self) -> dict:
        return {"classes": list(self.classes), "counted": _rows(self.counted, 0), "mass": _rows(self.mass, 2)}

    @classmethod
    def from_dict(cls, entry: dict) -> "ClassStats":
        return cls(tuple(entry["classes"]), _unrows(entry["counted"]), _unrows(entry["mass"]))


def fit_stats(true: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> ClassStats:
    """ClassStats of validation faces: true class indices (N,), their probabilities (N, K)."""
    true = np.asarray(true, int)
    probabilities = np.asarray(probabilities, np.float64)
    k = len(classes)
    counted = np.zeros((k, k))
    np.add.at(counted, (true, probabilities.argmax(axis=1)), 1)
    mass = np.zeros((k, k))
    np.add.at(mass, true, probabilities)
    return ClassStats(tuple(classes), counted, mass)


def fit_year_stats(ages: np.ndarray, points: np.ndarray, distributions: np.ndarray) -> ClassStats:
    """Age statistics at one-year resolution (101 x 101), so that any age bands can be made of
    them (`band_stats`): per true year, the faces whose reported age is in each year (its whole part), and
    the summed probability of each year."""
    true = np.clip(np.asarray(ages, int), 0, YEARS - 1)
    counted = np.zeros((YEARS, YEARS))
    np.add.at(counted, (true, np.clip(np.floor(points).astype(int), 0, YEARS - 1)), 1)
    mass = np.zeros((YEARS, YEARS))
    np.add.at(mass, true, np.asarray(distributions, np.float64))
    return ClassStats(tuple(str(a) for a in range(YEARS)), counted, mass)


def band_edges(text: str) -> tuple[int, ...]:
    """"0,3,10,20" -> (0, 3, 10, 20): the first age of each band, the last band open-ended."""
    try:
        edges = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"age bands {text!r}: give whole years separated by commas, such as 0,3,10,20,30,40,50,60,70") from None
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])) or edges[-1] > YEARS - 1:
        raise ValueError(f"age bands {text!r}: they start at 0 and rise, up to {YEARS - 1}")
    return edges


def band_names(edges: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"{low}-{high - 1}" for low, high in zip(edges, edges[1:])) + (f"{edges[-1]}+",)


def band_of_year(edges: tuple[int, ...]) -> np.ndarray:
    """(101,) the band index of each year."""
    return np.searchsorted(np.asarray(edges), np.arange(YEARS), side="right") - 1


def band_stats(years: ClassStats, edges: tuple[int, ...]) -> ClassStats:
    """Year statistics summed into bands: the faces of each true band, with the validation
    faces' spread of ages inside a band (so a band's row assumes ages inside it are mixed as
    in the validation faces)."""
    onehot = np.eye(len(edges))[band_of_year(edges)]  # (101, bands)
    return ClassStats(band_names(edges), onehot.T @ years.counted @ onehot, onehot.T @ years.mass @ onehot)


# ---- estimation --------------------------------------------------------------------------


@dataclass
class Estimate:
    """Per class: the corrected share, its interval, and the naive counted share."""

    share: np.ndarray
    low: np.ndarray
    high: np.ndarray
    counted: np.ndarray

    def to_dict(self, classes: tuple[str, ...], digits: int = 4) -> dict:
        return {
            name: {"share": round(float(s), digits), "low": round(float(lo), digits), "high": round(float(hi), digits), "counted": round(float(c), digits)}
            for name, s, lo, hi, c in zip(classes, self.share, self.low, self.high, self.counted)
        }


def project_simplex(values: np.ndarray) -> np.ndarray:
    """Each row's nearest point (Euclidean) with non-negative entries summing to 1."""
    values = np.atleast_2d(np.asarray(values, np.float64))
    ordered = -np.sort(-values, axis=1)
    cumulative = np.cumsum(ordered, axis=1) - 1
    index = np.arange(1, values.shape[1] + 1)
    rho = (ordered - cumulative / index > 0).sum(axis=1)
    theta = cumulative[np.arange(len(values)), rho - 1] / rho
    return np.maximum(values - theta[:, None], 0)


def solve_on_simplex(matrices: np.ndarray, observed: np.ndarray, ridge: float = 0.0, anchor: np.ndarray | None = None, iterations: int = 400) -> np.ndarray:
    """p on the simplex minimising |M^T p - observed|^2 + ridge |p - anchor|^2 for each of
    (B, K, K) matrices and (B, K) observed shares (anchor: (B, K), default the observed): the
    plain solution where it is a set of shares, else projected gradient (accelerated) from its
    projection. A singular M without ridge has many solutions: one is returned."""
    a = np.swapaxes(matrices, 1, 2)  # observed = a @ p
    anchor = observed if anchor is None else anchor
    gram = np.einsum("bji,bjk->bik", a, a) + ridge * np.eye(a.shape[-1])
    target = np.einsum("bji,bj->bi", a, observed) + ridge * anchor
    plain = np.einsum("bij,bj->bi", np.linalg.pinv(gram, hermitian=True), target)
    start = project_simplex(plain)
    done = np.abs(start - plain).max(axis=1) < 1e-9
    if done.all():
        return start
    gram, target, p = gram[~done], target[~done], start[~done]
    step = 1.0 / np.maximum(np.linalg.eigvalsh(gram)[:, -1], 1e-12)
    previous, momentum = p, p
    for t in range(iterations):
        gradient = np.einsum("bij,bj->bi", gram, momentum) - target
        p = project_simplex(momentum - step[:, None] * gradient)
        if np.abs(p - previous).max() < 1e-7:
            break
        momentum = p + (t / (t + 3)) * (p - previous)
        previous = p
    start[~done] = p
    return start


def _row_normalised(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=-1, keepdims=True)
    return np.divide(matrix, totals, out=np.full_like(matrix, 1.0 / matrix.shape[-1]), where=totals > 0)


def _em(probabilities: np.ndarray, weights: np.ndarray, prior: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Saerens et al.'s EM for (B,) collections given as face weights (B, N), each with the
    validation prior (B, K) the probabilities are calibrated to: (B, K) priors under which the
    re-weighted probabilities average to themselves."""
    total = weights.sum(axis=1, keepdims=True)
    p = (weights @ probabilities) / total
    for _ in range(iterations):
        # each face's probabilities under the new prior: q_k p_k / prior_k, normalised
        ratio = p / prior  # (B, K)
        norm = probabilities @ ratio.T  # (N, B)
        updated = ((weights / norm.T) @ probabilities) * ratio / total
        if np.abs(updated - p).max() < 1e-7:
            return updated
        p = updated
    return p


def _point(method: str, stats: ClassStats, labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """(B, K) estimates for collections given as face weights (B, N)."""
    k = len(stats.classes)
    total = weights.sum(axis=1, keepdims=True)
    counted = (weights @ np.eye(k)[labels]) / total
    if method == "cc":
        return counted
    if method == "acc":
        return solve_on_simplex(matrices, counted)
    if method in ("pacc", "rpacc"):
        mean = (weights @ probabilities) / total
        return solve_on_simplex(matrices, mean, RIDGE if method == "rpacc" else 0.0)
    if method == "em":
        return _em(probabilities, weights, np.broadcast_to(matrices, (len(weights), k)))
    raise ValueError(f"unknown quantification method {method!r}; choose one of {', '.join(METHODS)}")


def _matrices(method: str, stats: ClassStats, rng: np.random.Generator | None, draws: int) -> np.ndarray:
    """The validation statistic each method needs, as given (rng None) or drawn `draws` times
    as a bootstrap over the validation faces: (draws, K, K) matrices, or (draws, K) priors for "em"."""
    source = stats.counted if method in ("cc", "acc") else stats.mass
    if rng is None:
        drawn = source[None]
    else:  # each row normalised is a Dirichlet of its counts: the Bayesian bootstrap of that row's faces
        drawn = rng.gamma(np.broadcast_to(np.maximum(source, 0), (draws, *source.shape)))
    if method == "em":
        prior = drawn.sum(axis=1)
        return prior / prior.sum(axis=1, keepdims=True)
    return _row_normalised(drawn)


def _observed_draws(rng: np.random.Generator, observed: np.ndarray, weights: np.ndarray, matrix: np.ndarray, share: np.ndarray, draws: int) -> np.ndarray:
    """(draws, K) mean labels or probabilities of the collection as the model might have read
    these same faces again: normal, with the spread of the faces' readings within their classes.

    The question is the share of this collection, not of a population it was drawn from, so
    the spread between classes (which a plain bootstrap over faces adds) is not uncertainty:
    the within-class covariance is the total one less the between-class one the estimated shares
    and the validation matrix imply."""
    total = weights.sum()
    mean = weights @ observed / total
    centred = observed - mean
    effective = total**2 / (weights**2).sum()
    covariance = (centred.T * weights) @ centred / total
    offsets = matrix - mean  # each class's mean reading, less the collection's
    between = (offsets.T * share) @ offsets
    values, vectors = np.linalg.eigh(covariance - between)
    root = vectors * np.sqrt(np.clip(values, 0, None) / effective)
    return mean + rng.standard_normal((draws, len(mean))) @ root.T


def estimate_shares(
    method: str,
    stats: ClassStats,
    labels: np.ndarray,
    probabilities: np.ndarray,
    level: float = 0.9,
    draws: int = 300,
    seed: int = 0,
    counts: np.ndarray | None = None,
) -> Estimate:
    """Shares of `stats.classes` in a collection of faces with labels (N,) and probabilities (N, K).

    `counts` (N,) weighs faces (a person tracked across frames counts once: weight 1 for them).
    The interval's ends are the (1 - level)/2 and (1 + level)/2 quantiles of `draws`
    estimates, each with the collection's readings drawn again (_observed_draws; "em" and
    "cc": its faces resampled) and the validation statistics resampled.
    """
    if method not in METHODS:
        raise ValueError(f"unknown quantification method {method!r}; choose one of {', '.join(METHODS)}")
    labels = np.asarray(labels, int)
    probabilities = np.asarray(probabilities, np.float64)
    k = len(stats.classes)
    n = len(labels)
    base = np.ones(n) if counts is None else np.asarray(counts, np.float64)
    if n == 0 or base.sum() <= 0:
        nan = np.full(k, np.nan)
        return Estimate(nan, nan, nan, nan)
    counted = np.eye(k)[labels].T @ base / base.sum()
    share = _point(method, stats, labels, probabilities, base[None], _matrices(method, stats, None, 1))[0]
    if draws <= 0:
        return Estimate(share, share, share, counted)
    rng = np.random.default_rng(seed)
    if method in ("cc", "em"):  # the faces resampled
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=draws) * base[None]
        matrices = None if method == "cc" else _matrices(method, stats, rng, draws)
        replicates = _point(method, stats, labels, probabilities, weights, matrices)
    else:
        observed = np.eye(k)[labels] if method == "acc" else probabilities
        means = _observed_draws(rng, observed, base, _matrices(method, stats, None, 1)[0], share, draws)
        matrices = _matrices(method, stats, rng, draws)
        replicates = solve_on_simplex(matrices, means, RIDGE if method == "rpacc" else 0.0)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return Estimate(share, low, high, counted)


# ---- compact per-face age distributions ----------------------------------------------------


def encode_distribution(distribution: np.ndarray) -> list[int]:
    """A (101,) age distribution as per-mille integers (about 300 bytes of JSON a face)."""
    return [int(v) for v in np.rint(np.asarray(distribution, np.float64) * 1000)]


def decode_distributions(rows: list[list[int]]) -> np.ndarray:
    """(N, 101) distributions from encode_distribution's lists, each normalised to sum 1."""
    array = np.asarray(rows, np.float64).reshape(len(rows), YEARS)
    return _row_normalised(array)


# ---- compact matrices in JSON ----------------------------------------------------------------


def _rows(matrix: np.ndarray, digits: int) -> list[str]:
    """A matrix as one string per row ("3 0 12.5 ..."): a 101 x 101 one stays a few tens of KB."""
    def number(v: float) -> str:
        text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits else str(int(round(v)))
        return text if text not in ("-0", "") else "0"

    return [" ".join(number(v) for v in row) for row in np.asarray(matrix, np.float64)]


def _unrows(rows: list[str]) -> np.ndarray:
    return np.array([[float(v) for v in row.split()] for row in rows], np.float64)
