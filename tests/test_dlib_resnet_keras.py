"""The Keras rebuild of dlib's face ResNet must give dlib's own descriptors, and its parser of
dlib's weight file must fail clearly on a damaged file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from face.backbones import create_backbone
from face.backbones.base import ChipSpec
from face.backbones.dlib_resnet import DlibResNet, dlib_model_path
from face.backbones.dlib_resnet_keras import STAGES, DlibResNetKeras, parse_dlib_net, read_dlib_net
from face.errors import WeightsError

UTKFACE = Path(__file__).parents[1].parent / "shared/data/utkface"
NUM_CHIPS = 50
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def weights_bytes() -> bytes:
    return dlib_model_path("recognition").read_bytes()


@pytest.fixture(scope="module")
def backbone() -> DlibResNetKeras:
    backbone = DlibResNetKeras()
    backbone.model  # build once for the module
    return backbone


def real_chips(count: int) -> np.ndarray:
    """Aligned chips of UTKFace face crops, spread over the (sorted) folder."""
    from face.alignment import Aligner, crop_box
    from face.images import load_image

    paths = sorted(UTKFACE.glob("*.jpg.chip.jpg"))
    paths = paths[:: max(1, len(paths) // count)][:count]
    aligner = Aligner()
    chips = []
    for path in paths:
        image = load_image(path)
        chips.append(aligner.chips(image, [crop_box(image)], ChipSpec(150, 0.25))[0])
    return np.stack(chips)


def synthetic_chips(count: int) -> np.ndarray:
    """Noise, and smooth blobs on gradients, when the real images are not there."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:150, 0:150] / 150.0
    chips = []
    for i in range(count):
        if i % 2:
            chips.append(rng.integers(0, 256, (150, 150, 3)))
        else:
            cy, cx, radius = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.4)]
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2)
            colour, background = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            chips.append(blob[..., None] * colour + (1 - blob[..., None]) * background * xx[..., None])
    return np.clip(np.stack(chips), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    if UTKFACE.is_dir() and any(UTKFACE.glob("*.jpg.chip.jpg")):
        return real_chips(NUM_CHIPS)
    return synthetic_chips(NUM_CHIPS)


def test_embeddings_match_dlib(backbone: DlibResNetKeras, chips: np.ndarray) -> None:
    assert len(chips) >= NUM_CHIPS and chips.shape[1:] == (150, 150, 3)
    ours = backbone.embed(chips, batch_size=32)
    theirs = DlibResNet().embed(chips)
    assert ours.shape == theirs.shape == (len(chips), 128)
    assert ours.dtype == np.float32
    difference = float(np.abs(ours - theirs).max())
    assert difference <= TOLERANCE, f"max abs difference {difference:.3g} on {len(chips)} chips"
    # and the descriptors are not trivially equal (e.g. all zeros)
    assert np.linalg.norm(theirs, axis=1).min() > 0.1


def test_layer_list_from_the_file(weights_bytes: bytes) -> None:
    layers = parse_dlib_net(weights_bytes, "model.dat")
    kinds = [layer.kind for layer in layers]
    assert kinds[0] == "loss_metric" and kinds[1] == "fc" and kinds[-1] == "input"
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert kinds.count("avg_pool") == 5 and kinds.count("max_pool") == 1
    source = layers[-1].params
    assert (source["rows"], source["cols"]) == (150, 150)
    assert source["avg_rgb"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    stem = layers[-2].params
    assert stem["filters"].shape == (32, 3, 7, 7) and (stem["stride_y"], stem["padding_y"]) == (2, 0)
    fc = layers[1].params
    assert fc["weights"].shape == (256, 128) and fc["biases"] is None
    assert layers[0].params["distance_threshold"] == pytest.approx(0.6)
    widths = [layer.params["num_filters"] for layer in reversed(layers) if layer.kind == "con"]
    assert widths == [32] + [32] * 6 + [64] * 8 + [128] * 6 + [256] * 6 + [256] * 2


def test_model_stages_and_shapes(backbone: DlibResNetKeras) -> None:
    model = backbone.model
    assert backbone.stages == STAGES
    names = [layer.name for layer in model.layers]
    positions = [names.index(stage) for stage in STAGES]
    assert positions == sorted(positions) and names[-1] == "embedding"
    assert model.input_shape == (None, 150, 150, 3) and model.output_shape == (None, 128)
    assert tuple(model.get_layer("stem").output.shape[1:]) == (35, 35, 32)
    assert tuple(model.get_layer("level5").output.shape[1:]) == (2, 2, 256)
    assert backbone.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_backbone_interface() -> None:
    backbone = create_backbone("dlib-resnet-keras")
    assert isinstance(backbone, DlibResNetKeras)
    assert backbone.chip == ChipSpec(150, 0.25) and backbone.feature_size == 128
    described = backbone.describe()
    assert described["weights"].startswith("dlib_face_recognition_resnet_model_v1.dat:")
    assert backbone.preprocess(np.full((1, 150, 150, 3), 255, np.uint8)).dtype == np.float32


@pytest.mark.parametrize("keep", [0, 1, 20, 300, 20_000, 11_000_000, -1])
def test_truncated_file_raises(tmp_path: Path, weights_bytes: bytes, keep: int) -> None:
    path = tmp_path / "truncated.dat"
    path.write_bytes(weights_bytes[:keep] if keep >= 0 else weights_bytes[:-1])
    with pytest.raises(WeightsError, match=r"truncated\.dat: .*byte offset \d+"):
        read_dlib_net(path)
    with pytest.raises(WeightsError):
        DlibResNetKeras(weights=path).model


def test_corrupt_file_raises(tmp_path: Path, weights_bytes: bytes) -> None:
    renamed = weights_bytes.replace(b"con_4", b"cxn_4", 1)
    with pytest.raises(WeightsError, match=r"unsupported or corrupt layer record 'cxn_4' at byte offset 334"):
        parse_dlib_net(renamed, "bad.dat")
    with pytest.raises(WeightsError, match="bytes left after the network"):
        parse_dlib_net(weights_bytes + b"\x00", "long.dat")
    with pytest.raises(WeightsError, match="no such dlib weights file"):
        DlibResNetKeras(weights=tmp_path / "missing.dat")
