"""Quantification on synthetic faces whose true shares are known."""
import numpy as np
import pytest

from face.quantification import (
    METHODS,
    ClassStats,
    band_edges,
    band_names,
    band_stats,
    decode_distributions,
    encode_distribution,
    estimate_shares,
    fit_stats,
    fit_year_stats,
    project_simplex,
    solve_on_simplex,
)

SEPARATION = 1.28  # class means at +-1.28 sd: 10% of each class is labelled wrongly


def synthetic_faces(rng, n: int, share_1: float):
    """Two classes, scores N(+-SEPARATION, 1), probabilities calibrated for equal priors."""
    true = (rng.random(n) < share_1).astype(int)
    score = rng.normal(np.where(true == 1, SEPARATION, -SEPARATION), 1.0)
    p1 = 1 / (1 + np.exp(-2 * SEPARATION * score))
    return true, np.stack([1 - p1, p1], axis=1)


def test_every_method_recovers_a_shifted_prior_that_counting_misses():
    rng = np.random.default_rng(1)
    stats = fit_stats(*synthetic_faces(rng, 4000, 0.5), ("a", "b"))
    true, probabilities = synthetic_faces(rng, 3000, 0.8)
    truth = true.mean()
    counted = estimate_shares("cc", stats, probabilities.argmax(1), probabilities, draws=0).share[1]
    assert abs(counted - truth) > 0.04  # the bias counting has: about 0.8 * 0.9 + 0.2 * 0.1 = 0.74
    for method in ("acc", "pacc", "em"):
        result = estimate_shares(method, stats, probabilities.argmax(1), probabilities, draws=200)
        assert abs(result.share[1] - truth) < 0.025, method
        assert result.low[1] <= truth <= result.high[1], method
        assert result.share.sum() == pytest.approx(1.0)
        assert result.counted[1] == pytest.approx(counted)


def test_intervals_cover_the_truth_about_as_often_as_they_claim():
    rng = np.random.default_rng(2)
    covered = {"acc": 0, "pacc": 0}
    trials = 60
    for _ in range(trials):
        stats = fit_stats(*synthetic_faces(rng, 1000, 0.5), ("a", "b"))
        true, probabilities = synthetic_faces(rng, 500, rng.uniform(0.1, 0.9))
        for method in covered:
            result = estimate_shares(method, stats, probabilities.argmax(1), probabilities, draws=200, seed=int(rng.integers(1 << 30)))
            covered[method] += result.low[1] <= true.mean() <= result.high[1]
    for method, hits in covered.items():
        assert 0.8 <= hits / trials <= 1.0, (method, hits)


def test_a_nearly_singular_matrix_widens_the_interval_and_breaks_nothing():
    rng = np.random.default_rng(3)
    labels = (rng.random(500) < 0.6).astype(int)
    probabilities = np.stack([1 - labels * 0.6 - 0.2, labels * 0.6 + 0.2], axis=1)
    good = ClassStats(("a", "b"), np.array([[900.0, 100], [100, 900]]), np.array([[850.0, 150], [150, 850]]))
    # each class labelled "b" about half the time: the matrix is singular up to counting noise
    bad = ClassStats(("a", "b"), np.array([[500.0, 500], [490, 510]]), np.array([[500.0, 500], [495, 505]]))
    for method in ("acc", "pacc"):
        narrow = estimate_shares(method, good, labels, probabilities)
        wide = estimate_shares(method, bad, labels, probabilities)
        for result in (narrow, wide):
            assert np.isfinite(result.share).all() and np.isfinite(result.low).all() and np.isfinite(result.high).all()
            assert (result.share >= 0).all() and result.share.sum() == pytest.approx(1.0)
            assert (0 <= result.low).all() and (result.high <= 1).all()
        assert wide.high[1] - wide.low[1] > 3 * (narrow.high[1] - narrow.low[1]), method
        assert wide.high[1] - wide.low[1] > 0.5, method
    exactly = ClassStats(("a", "b"), np.array([[5.0, 5], [5, 5]]), np.array([[5.0, 5], [5, 5]]))
    result = estimate_shares("acc", exactly, labels, probabilities)
    assert np.isfinite(result.share).all() and result.share.sum() == pytest.approx(1.0)


def test_projection_and_constrained_solution():
    projected = project_simplex(np.array([[0.7, 0.5, -0.1], [2.0, 0.0, 0.0], [0.2, 0.3, 0.5]]))
    assert projected == pytest.approx(np.array([[0.6, 0.4, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]))
    matrix = np.array([[[0.9, 0.1], [0.1, 0.9]]])
    assert solve_on_simplex(matrix, np.array([[0.98, 0.02]]))[0] == pytest.approx([1.0, 0.0], abs=1e-6)  # beyond the simplex
    assert solve_on_simplex(matrix, np.array([[0.26, 0.74]]))[0] == pytest.approx([0.2, 0.8])


def test_year_statistics_make_any_age_bands():
    rng = np.random.default_rng(4)
    ages = rng.integers(0, 90, 3000)
    points = np.clip(ages + rng.normal(0, 4, 3000), 0, 100)
    distributions = np.exp(-0.5 * ((np.arange(101)[None] - points[:, None]) / 4) ** 2)
    distributions /= distributions.sum(axis=1, keepdims=True)
    years = fit_year_stats(ages, points, distributions)
    assert years.counted.sum() == 3000 and years.mass.sum() == pytest.approx(3000)
    assert ClassStats.from_dict(years.to_dict()).counted == pytest.approx(years.counted)
    edges = band_edges("0,20,60")
    bands = band_stats(years, edges)
    assert band_names(edges) == ("0-19", "20-59", "60+")
    assert bands.counted.sum(axis=1) == pytest.approx([(ages < 20).sum(), ((ages >= 20) & (ages < 60)).sum(), (ages >= 60).sum()])
    young = ages < 20  # a collection of mostly young faces
    chosen = np.concatenate([np.flatnonzero(young)[:400], np.flatnonzero(~young)[:100]])
    labels = np.searchsorted(np.asarray(edges), np.rint(points[chosen]), side="right") - 1
    band_masses = np.stack([distributions[chosen][:, a:b].sum(1) for a, b in zip(edges, (*edges[1:], 101))], axis=1)
    result = estimate_shares("pacc", bands, labels, band_masses)
    assert result.share[0] == pytest.approx(0.8, abs=0.03)
    for text in ("", "3,10", "0,10,5", "0,a", "0,200"):
        with pytest.raises(ValueError, match="age bands"):
            band_edges(text)


def test_age_distributions_round_trip_compactly():
    distribution = np.exp(-0.5 * ((np.arange(101) - 33.3) / 6) ** 2)
    distribution /= distribution.sum()
    encoded = encode_distribution(distribution)
    assert len(encoded) == 101 and all(isinstance(v, int) for v in encoded)
    assert np.abs(decode_distributions([encoded])[0] - distribution).max() < 0.001


def test_unknown_method_is_refused():
    stats = ClassStats(("a", "b"), np.eye(2) * 10, np.eye(2) * 10)
    assert "em" in METHODS
    with pytest.raises(ValueError, match="unknown quantification method"):
        estimate_shares("magic", stats, np.array([0, 1]), np.eye(2))


def test_statistics_go_into_a_sidecar_and_back(tmp_path):
    import json
    import shutil

    from face.errors import ConfigError
    from face.evaluation import evaluate_folder, quantification_stats
    from face.model import read_heads
    from face.model_files import heads_id, store_quantification_stats
    from face.readout import AgeReadout
    from face.paths import shipped_weights_dir
    from face.report import model_statistics

    rng = np.random.default_rng(5)
    n = 400
    ages = rng.integers(1, 90, n)
    age = np.exp(-0.5 * ((np.arange(101)[None] - ages[:, None]) / 5) ** 2)
    race = rng.dirichlet(np.ones(7), n)
    probabilities = {"age": age / age.sum(1, keepdims=True), "gender": rng.dirichlet(np.ones(2), n), "race": race}
    labels = {"age": ages, "gender": rng.integers(0, 2, n), "race": rng.integers(0, 5, n), "race7": np.where(rng.random(n) < 0.5, rng.integers(0, 7, n), -1)}
    stats = quantification_stats(probabilities, labels, AgeReadout())
    assert stats["faces"] == n and set(stats) == {"faces", "gender", "race", "race_fairface", "age_years"}
    shipped = shipped_weights_dir() / "dlib-resnet-keras-finetuned.keras"
    heads = tmp_path / shipped.name
    shutil.copy(shipped, heads)
    shutil.copy(shipped.with_suffix(".json"), heads.with_suffix(".json"))
    store_quantification_stats(heads, "utkface", stats)
    store_quantification_stats(heads, "fairface", stats)
    metadata = json.loads(heads.with_suffix(".json").read_text())
    assert set(metadata["quantification"]["datasets"]) == {"utkface", "fairface"}
    combined = model_statistics(metadata, heads_id(read_heads(heads)))
    assert combined["gender"].counted.sum() == 2 * n and combined["age_years"].counted.shape == (101, 101)
    assert len(heads.with_suffix(".json").read_bytes()) < 300_000
    with pytest.raises(ConfigError, match="--store-stats needs --split validation"):
        evaluate_folder(tmp_path, tmp_path / "r.json", heads=heads, store_stats=True, split="all")
