"""The rebuilt keras-vggface ResNet50: names, weight loading from a Keras-2 layout file, bad files."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from face.backbones import create_backbone
from face.backbones.vggface2_resnet50 import (
    BN_WEIGHTS,
    MEAN_BGR,
    WEIGHTS_FILENAME,
    VGGFace2ResNet50,
    check_weights_file,
    conv_specs,
    expected_weights,
    file_name,
    keras_name,
    resolve_weights,
)
from face.errors import WeightsError

try:
    from http_server import serve_files
except ImportError:  # tests/ is a package
    from tests.http_server import serve_files

#: layers without weights that a Keras 2 save_weights file lists too
WEIGHTLESS = ("input_1", "activation_1", "max_pooling2d_1", "add_1", "avg_pool")


def fixture_tensors() -> dict[str, dict[str, np.ndarray]]:
    """Distinct random tensors for every weight, seeded by layer index, small enough to stay finite."""
    tensors = {}
    for index, (layer, weights) in enumerate(expected_weights().items()):
        rng = np.random.default_rng(index)
        values = {}
        for weight, shape in weights.items():
            if weight == "kernel":
                fan_in = int(np.prod(shape[:-1]))
                values[weight] = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))
            elif weight in ("gamma", "moving_variance"):
                values[weight] = rng.uniform(0.5, 1.0, shape).astype(np.float32)
            else:
                values[weight] = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
        tensors[layer] = values
    return tensors


def write_keras2_weights(
    path: Path,
    tensors: dict[str, dict[str, np.ndarray]] | None = None,
    skip: frozenset[str] = frozenset(),
    shapes: dict[tuple[str, str], tuple[int, ...]] | None = None,
) -> Path:
    """Write weights the way Keras 2's save_weights_to_hdf5_group did.

    `f.create_group(layer.name)` and `group.create_dataset(weight.name)` with names containing
    '/', which h5py turns into nested groups. Without `tensors` the datasets get no data
    (h5py allocates lazily), which keeps the files for the error cases tiny and fast.
    """
    layers = [name for name in expected_weights() if name not in skip]
    shapes = shapes or {}
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = np.array([name.encode() for name in WEIGHTLESS[:1] + tuple(layers) + WEIGHTLESS[1:]])
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for name in WEIGHTLESS:
            handle.create_group(name).attrs["weight_names"] = np.asarray([])
        for layer in layers:
            group = handle.create_group(layer)
            weights = expected_weights()[layer]
            names = [f"{layer}/{weight}:0" for weight in weights]  # gamma, beta, moving_mean, moving_variance
            group.attrs["weight_names"] = np.array([name.encode() for name in names])
            for weight, full_name in zip(weights, names):
                if tensors is not None:
                    group.create_dataset(full_name, data=tensors[layer][weight])
                else:
                    group.create_dataset(full_name, shape=shapes.get((layer, weight), weights[weight]), dtype="f4")
    return path


@pytest.fixture(scope="module")
def tensors() -> dict[str, dict[str, np.ndarray]]:
    return fixture_tensors()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, tensors) -> Path:
    return write_keras2_weights(tmp_path_factory.mktemp("weights") / "fixture.h5", tensors)


@pytest.fixture(scope="module")
def backbone(weights_file: Path) -> VGGFace2ResNet50:
    return VGGFace2ResNet50(weights=weights_file)


@pytest.fixture
def empty_weights(tmp_path: Path):
    """Writes a tiny structurally complete file, optionally broken in one way."""
    return lambda **kwargs: write_keras2_weights(tmp_path / "weights.h5", **kwargs)


# --- names and shapes ------------------------------------------------------------------


def test_layer_name_map_is_one_to_one_and_covers_every_conv_and_bn(backbone: VGGFace2ResNet50) -> None:
    expected = expected_weights()
    assert sum(1 for name in expected if name.endswith("/bn")) == 53
    assert sum(1 for name in expected if not name.endswith("/bn")) == 53 == len(conv_specs())
    assert "conv1/7x7_s2/bn" in expected and "conv2_1_1x1_proj" in expected and "conv5_3_1x1_increase/bn" in expected

    keras_names = [keras_name(name) for name in expected]
    assert len(set(keras_names)) == len(keras_names)
    assert all("/" not in name for name in keras_names)
    assert [file_name(name) for name in keras_names] == list(expected)
    assert keras_name("conv1/7x7_s2/bn") == "conv1__7x7_s2__bn"

    model = backbone.model
    all_keras_names = [layer.name for layer in model.layers]
    assert len({file_name(name) for name in all_keras_names}) == len(all_keras_names)
    with_weights = {layer.name: {w.name: tuple(w.shape) for w in layer.weights} for layer in model.layers if layer.weights}
    assert with_weights == {keras_name(name): weights for name, weights in expected.items()}
    with pytest.raises(ValueError):
        keras_name("conv1__x")


def test_architecture_facts(backbone: VGGFace2ResNet50) -> None:
    model = backbone.model
    conv1 = model.get_layer(keras_name("conv1/7x7_s2"))
    assert conv1.strides == (2, 2) and conv1.padding == "same" and not conv1.use_bias
    assert all(not layer.use_bias for layer in model.layers if hasattr(layer, "use_bias") and hasattr(layer, "kernel"))
    assert all(layer.epsilon == 1e-3 for layer in model.layers if "bn" in layer.name)
    # Caffe-style: the stride is on the 1x1 reduce and the projection, not on the 3x3
    assert model.get_layer("conv3_1_1x1_reduce").strides == (2, 2)
    assert model.get_layer("conv3_1_1x1_proj").strides == (2, 2)
    assert model.get_layer("conv3_1_3x3").strides == (1, 1)
    assert model.get_layer("conv2_1_1x1_reduce").strides == (1, 1)
    assert [model.get_layer(name).output.shape[1:] for name in backbone.stages] == [
        (49, 49, 64), (49, 49, 256), (25, 25, 512), (13, 13, 1024), (7, 7, 2048)
    ]
    assert model.output_shape == (None, 2048)


# --- loading ---------------------------------------------------------------------------


def test_fixture_uses_keras2_nested_layout(weights_file: Path) -> None:
    """What the loader has to cope with: names with '/' are nested groups, and a conv's group holds its BN."""
    with h5py.File(weights_file, "r") as handle:
        assert isinstance(handle["conv1"]["7x7_s2"]["bn"], h5py.Group)
        assert set(handle["conv1/7x7_s2"]) == {"bn", "conv1"}
        assert handle["conv1/7x7_s2/bn"].attrs["weight_names"][0] == b"conv1/7x7_s2/bn/gamma:0"
        assert handle["conv1/7x7_s2/bn"]["conv1/7x7_s2/bn/gamma:0"].shape == (64,)
        assert "conv1/7x7_s2/bn/conv1/7x7_s2/bn/moving_variance:0" in handle


def test_every_tensor_lands_in_its_layer(backbone: VGGFace2ResNet50, tensors) -> None:
    model = backbone.model
    for layer_name, weights in tensors.items():
        layer = model.get_layer(keras_name(layer_name))
        for weight, value in weights.items():
            np.testing.assert_array_equal(np.asarray(getattr(layer, weight)), value, err_msg=f"{layer_name} {weight}")
    bn = model.get_layer(keras_name("conv4_3_3x3/bn"))
    assert [w.name for w in bn.weights] == list(BN_WEIGHTS)


def test_embed_gives_2048_features(backbone: VGGFace2ResNet50) -> None:
    chips = np.random.default_rng(0).integers(0, 256, (3, 200, 200, 3), dtype=np.uint8)
    features = backbone.embed(chips, batch_size=2)
    assert features.shape == (3, 2048) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert backbone.embed(chips[:0]).shape == (0, 2048)


def test_unfreezing_the_last_stage_keeps_its_batch_norm_in_inference_mode(backbone: VGGFace2ResNet50) -> None:
    from face.heads import HeadsConfig, build_heads
    from face.unfreezing import phase_model

    assert backbone.boundary(1) == "conv4_6_relu" and backbone.layer_shape("conv4_6_relu") == (13, 13, 1024)
    model, top = phase_model(backbone, "conv4_6_relu", build_heads(HeadsConfig(feature_size=2048)))
    norms = [layer for layer in top.layers if "bn" in layer.name]
    convs = [layer for layer in top.layers if layer.name.startswith("conv5") and layer.weights and "bn" not in layer.name]
    assert len(norms) == len(convs) == 10  # conv5_x: 3 blocks of 3 plus the projection
    assert not any(layer.trainable for layer in norms) and all(layer.trainable for layer in convs)
    assert "conv4_6_1x1_increase" not in [layer.name for layer in top.layers]  # the part below stays out
    chips = np.random.default_rng(1).integers(0, 256, (2, 200, 200, 3), dtype=np.uint8)
    values = backbone.activations(chips, ("conv4_6_relu", None))
    above = np.asarray(top(values["conv4_6_relu"], training=True))  # training mode: BN must still use its statistics
    assert np.abs(above - values[None]).max() <= 1e-4 * max(1.0, np.abs(values[None]).max())


def test_preprocess_is_bgr_minus_vggface2_means(backbone: VGGFace2ResNet50) -> None:
    chips = np.zeros((1, 200, 200, 3), np.uint8)
    chips[..., 0], chips[..., 1], chips[..., 2] = 10, 20, 30  # R, G, B
    out = backbone.preprocess(chips)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [30 - MEAN_BGR[0], 20 - MEAN_BGR[1], 10 - MEAN_BGR[2]], rtol=1e-6)


def test_description(backbone: VGGFace2ResNet50, weights_file: Path) -> None:
    described = backbone.describe()
    assert described["backbone"] == "vggface2-resnet50" and described["feature_size"] == 2048
    assert described["chip_size"] == 200 and described["chip_padding"] == 0.4
    assert "BGR" in backbone.preprocessing and "91.4953" in backbone.preprocessing
    assert backbone.fingerprint().startswith("fixture.h5:")
    assert backbone.stages[0] == "pool1" and backbone.stages[-1] == "conv5_3_relu"


def test_registry_creates_it_with_other_input_size(weights_file: Path) -> None:
    small = create_backbone("vggface2-resnet50", weights=weights_file, input_size=64)
    assert small.chip.size == 64 and small.model.output_shape == (None, 2048)
    assert small.embed(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 2048)


# --- bad files -------------------------------------------------------------------------


def test_missing_file_with_download_disabled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOWOLD_HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsError, match="does not exist and downloading is disabled") as caught:
        VGGFace2ResNet50(download=False)
    assert str(tmp_path / "home" / "weights" / WEIGHTS_FILENAME) in str(caught.value)
    with pytest.raises(WeightsError, match=r"nowhere\.h5 does not exist"):
        VGGFace2ResNet50(weights=tmp_path / "nowhere.h5")


def test_truncated_file(tmp_path: Path, weights_file: Path) -> None:
    truncated = tmp_path / "truncated.h5"
    with weights_file.open("rb") as source:
        truncated.write_bytes(source.read(1234))
    with pytest.raises(WeightsError, match=r"truncated\.h5 is truncated: 1,234 bytes, expected 94,694,792"):
        check_weights_file(truncated)
    # a longer cut of a real HDF5 file, with no size to compare: h5py's complaint, still one WeightsError
    with weights_file.open("rb") as source:
        truncated.write_bytes(source.read(weights_file.stat().st_size // 2))
    with pytest.raises(WeightsError, match=r"truncated\.h5 is truncated or corrupt"):
        check_weights_file(truncated, expected_size=None)


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "page.h5"
    path.write_text("<html>Not Found</html>")
    with pytest.raises(WeightsError, match=r"page\.h5 is not an HDF5 file"):
        check_weights_file(path, expected_size=None)
    with pytest.raises(WeightsError, match="is not an HDF5 file"):
        VGGFace2ResNet50(weights=path)


def test_missing_layer(empty_weights) -> None:
    path = empty_weights(skip=frozenset({"conv3_2_3x3"}))
    with pytest.raises(WeightsError, match=r"weights\.h5 is missing layer 'conv3_2_3x3'$"):
        check_weights_file(path, expected_size=None)


def test_wrong_shape(empty_weights) -> None:
    path = empty_weights(shapes={("conv1/7x7_s2/bn", "gamma"): (32,)})
    with pytest.raises(WeightsError, match=r"weights\.h5: 'conv1/7x7_s2/bn' weight 'gamma' has shape \(32,\) expected \(64,\)"):
        check_weights_file(path, expected_size=None)


def test_not_a_keras_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["data"] = np.zeros(3)
    with pytest.raises(WeightsError, match="has no 'layer_names' attribute"):
        check_weights_file(path, expected_size=None)


def test_structurally_complete_file_passes(empty_weights) -> None:
    path = empty_weights()
    check_weights_file(path, expected_size=None)
    with pytest.raises(WeightsError, match=r"has the wrong size|is truncated"):
        check_weights_file(path)  # default: the real file's size


# --- resolving and downloading ---------------------------------------------------------


def test_resolve_weights_downloads_once_into_howold_home(tmp_path: Path, monkeypatch, empty_weights) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOWOLD_HOME", str(home))
    served = empty_weights()
    size = served.stat().st_size
    with serve_files(served.parent) as server:
        url = server.url(served.name)
        path = resolve_weights(url=url, expected_size=size)
        assert path == home / "weights" / WEIGHTS_FILENAME
        assert path.read_bytes() == served.read_bytes()
        check_weights_file(path, expected_size=size)
        assert resolve_weights(url=url, expected_size=size) == path  # cached: no second request
        assert len(server.requests) == 1
    assert resolve_weights(tmp_path / "explicit.h5") == tmp_path / "explicit.h5"


def test_resolve_weights_failed_download_caches_nothing(tmp_path: Path, monkeypatch, empty_weights) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOWOLD_HOME", str(home))
    served = empty_weights()
    with serve_files(served.parent) as server:
        with pytest.raises(WeightsError, match="incomplete"):
            resolve_weights(url=server.url(served.name, route="truncated"), expected_size=served.stat().st_size)
        with pytest.raises(WeightsError, match=r"absent\.h5: HTTP 404"):
            resolve_weights(url=server.url("absent.h5"))
    assert list((home / "weights").iterdir()) == []
