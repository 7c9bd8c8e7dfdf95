import json

import numpy as np
import pytest

from face.backbones.dlib_resnet import DlibResNet
from face.data import load_dataset
from face.features import AugmentConfig, augment_chip, extract_features

from conftest import astronaut_face


class CountingDlibResNet(DlibResNet):
    """The real dlib backbone, counting how many chips it is asked to embed."""

    embedded = 0

    def embed(self, chips, batch_size=32):
        CountingDlibResNet.embedded += len(chips)
        return super().embed(chips, batch_size)


@pytest.fixture
def backbone():
    CountingDlibResNet.embedded = 0
    return CountingDlibResNet()


def test_views_are_plain_mirrored_then_random():
    chip = np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    config = AugmentConfig(views=4)
    assert np.array_equal(augment_chip(chip, 0, config, np.random.default_rng(1)), chip)
    assert np.array_equal(augment_chip(chip, 1, config, np.random.default_rng(1)), chip[:, ::-1])
    first = augment_chip(chip, 2, config, np.random.default_rng(5))
    again = augment_chip(chip, 2, config, np.random.default_rng(5))
    assert first.shape == chip.shape and np.array_equal(first, again) and not np.array_equal(first, chip)


def test_cache_is_reused_and_resumes_missing_chunks(tiny_utkface, tmp_path, backbone):
    tmp_path = tmp_path / "cache"
    dataset = load_dataset(tiny_utkface)
    config = AugmentConfig(views=2)
    features = extract_features(backbone, dataset, config, cache_root=tmp_path, chunk_size=10, progress=False)
    assert features.shape == (24, 2, 128)
    assert backbone.embedded == 48
    again = extract_features(backbone, dataset, config, cache_root=tmp_path, chunk_size=10, progress=False)
    assert backbone.embedded == 48 and np.array_equal(features, again)
    # a run killed after two chunks left the third missing: only that one is recomputed
    (cache,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    last = sorted(cache.glob("chunk_*.npy"))[-1]
    last.unlink()
    resumed = extract_features(backbone, dataset, config, cache_root=tmp_path, chunk_size=10, progress=False)
    assert backbone.embedded == 48 + 4 * 2 and np.allclose(resumed, features, atol=1e-3)


def test_cache_key_changes_with_augmentation_and_images(tiny_utkface, tmp_path, backbone):
    tmp_path = tmp_path / "cache"
    dataset = load_dataset(tiny_utkface, limit=4)
    extract_features(backbone, dataset, AugmentConfig(views=2), cache_root=tmp_path, progress=False)
    extract_features(backbone, dataset, AugmentConfig(views=3), cache_root=tmp_path, progress=False)
    extract_features(backbone, load_dataset(tiny_utkface, limit=5), AugmentConfig(views=2), cache_root=tmp_path, progress=False)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3
    assert backbone.embedded == 4 * 2 + 4 * 3 + 5 * 2


def test_cache_written_with_one_chunk_size_serves_another(tiny_utkface, tmp_path, backbone):
    dataset = load_dataset(tiny_utkface, limit=12)
    first = extract_features(backbone, dataset, AugmentConfig(views=1), cache_root=tmp_path, chunk_size=5, progress=False)
    again = extract_features(backbone, dataset, AugmentConfig(views=1), cache_root=tmp_path, chunk_size=256, progress=False)
    assert backbone.embedded == 12 and np.array_equal(first, again)


def test_cache_key_changes_with_every_augmentation_setting(tiny_utkface, tmp_path, backbone):
    """Another seed (or shift, scale, erasing) gives other random views, so it must not reuse the cache."""
    tmp_path = tmp_path / "cache"
    dataset = load_dataset(tiny_utkface, limit=3)
    base = AugmentConfig(views=3)
    first = extract_features(backbone, dataset, base, cache_root=tmp_path, progress=False)
    reseeded = extract_features(backbone, dataset, AugmentConfig(views=3, seed=1), cache_root=tmp_path, progress=False)
    assert backbone.embedded == 2 * 3 * 3
    assert np.array_equal(first[:, :2], reseeded[:, :2])  # plain and mirrored views do not depend on the seed
    assert not np.allclose(first[:, 2], reseeded[:, 2], atol=1e-3)  # the random view does
    for other in (AugmentConfig(views=3, max_shift=0.1), AugmentConfig(views=3, max_scale=0.1), AugmentConfig(views=3, erasing_probability=0.0), AugmentConfig(views=3, erasing_area=(0.1, 0.2))):
        extract_features(backbone, dataset, other, cache_root=tmp_path, progress=False)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 6
    assert backbone.embedded == 6 * 3 * 3


def test_a_chunk_cut_short_is_computed_again_not_read(tiny_utkface, tmp_path, backbone):
    """A chunk file that lacks its last bytes (a copy cut short, a disk that filled outside
    howold) or its header is deleted and computed again: the features come out whole."""
    tmp_path = tmp_path / "cache"
    dataset = load_dataset(tiny_utkface)
    config = AugmentConfig(views=2)
    features = np.asarray(extract_features(backbone, dataset, config, cache_root=tmp_path, chunk_size=8, progress=False))
    assert backbone.embedded == 48
    (cache,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    first, second, third = sorted(cache.glob("chunk_*.npy"))
    untouched = first.stat().st_ino, first.stat().st_mtime_ns
    second.write_bytes(second.read_bytes()[:-1])  # one byte short
    third.write_bytes(third.read_bytes()[:40])  # not even its whole header
    resumed = extract_features(backbone, dataset, config, cache_root=tmp_path, chunk_size=8, progress=False)
    assert backbone.embedded == 48 + 2 * 8 * 2  # the two damaged chunks, nothing else
    assert np.allclose(resumed, features, atol=1e-3)
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == untouched
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, second.name, third.name, "meta.json"])


def sharpness(chip: np.ndarray) -> float:
    """Mean squared difference of neighbouring pixels: fine detail, which shrinking removes."""
    grey = chip.astype(np.float64).mean(axis=2)
    return float((np.diff(grey, axis=1) ** 2).mean())


def test_low_resolution_views_are_the_last_random_views_and_lose_detail():
    import cv2

    chip = cv2.resize(astronaut_face(), (150, 150), interpolation=cv2.INTER_AREA)
    config = AugmentConfig(views=4, low_resolution_views=1, low_resolution_sides=(32, 40), erasing_probability=0.0)
    full, small = (augment_chip(chip, view, config, np.random.default_rng(3)) for view in (2, 3))
    # the same draws make the same geometry: view 3 differs from view 2 only by the shrinking
    assert full.shape == small.shape == chip.shape
    assert sharpness(small) < 0.6 * sharpness(full)
    same_but_sharp = augment_chip(chip, 3, AugmentConfig(views=4, erasing_probability=0.0), np.random.default_rng(3))
    assert np.array_equal(same_but_sharp, full)


def test_resolution_shrinks_every_view_the_same_way():
    import cv2

    chip = cv2.resize(astronaut_face(), (150, 150), interpolation=cv2.INTER_AREA)
    config = AugmentConfig(views=2, resolution=48)
    plain, mirrored = (augment_chip(chip, view, config, np.random.default_rng(0)) for view in (0, 1))
    assert np.array_equal(mirrored, augment_chip(chip[:, ::-1].copy(), 0, config, np.random.default_rng(9)))
    assert sharpness(plain) < 0.6 * sharpness(chip) and not np.array_equal(plain, chip)


@pytest.mark.parametrize("settings, named", [
    ({"views": 2, "low_resolution_views": 1}, "low_resolution_views"),
    ({"views": 4, "low_resolution_views": 3}, "low_resolution_views"),
    ({"views": 4, "low_resolution_views": 1, "low_resolution_sides": (60, 30)}, "low_resolution_sides"),
    ({"views": 2, "resolution": 4}, "resolution"),
])
def test_bad_low_resolution_settings_are_refused(settings, named):
    from face.errors import ConfigError

    with pytest.raises(ConfigError, match=named):
        AugmentConfig(**settings)


def test_low_resolution_settings_key_their_own_cache_and_leave_older_keys_alone():
    from dataclasses import asdict

    older = {k: v for k, v in asdict(AugmentConfig(views=3)).items() if k not in ("low_resolution_views", "low_resolution_sides", "resolution")}
    assert AugmentConfig(views=3).key() == older  # caches made before these settings keep their keys
    keys = [AugmentConfig(views=3).key(), AugmentConfig(views=3, low_resolution_views=1).key(),
            AugmentConfig(views=3, low_resolution_views=1, low_resolution_sides=(40, 60)).key(), AugmentConfig(views=3, resolution=48).key()]
    assert len({str(sorted(k.items())) for k in keys}) == 4
    # as a sidecar records them (JSON turns tuples into lists), each config keys the same cache
    for config in (AugmentConfig(views=3), AugmentConfig(views=3, low_resolution_views=1, low_resolution_sides=(40, 60))):
        recorded = AugmentConfig.from_dict(json.loads(json.dumps(asdict(config))))
        assert recorded == config and recorded.key() == config.key()
