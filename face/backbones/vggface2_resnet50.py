"""keras-vggface's ResNet50 trained on VGGFace2 (include_top=False), rebuilt in Keras 3.

rcmalli/keras-vggface only runs on Keras 2, but its weights file is plain HDF5, so the
network is rebuilt here layer for layer and every tensor is copied in by name:

* Caffe-style bottleneck blocks: the stride sits on the first 1x1 conv ("_1x1_reduce") and
  on the projection ("_1x1_proj"), not on the 3x3; every conv has use_bias=False and is
  followed by BatchNormalization with Keras 2's default epsilon 1e-3.
* conv1 is 7x7/2 'same', then 3x3/2 max pooling with 'valid' padding.
* keras-vggface ends in AveragePooling2D((7, 7), name='avg_pool'); for 200 and 224 inputs
  the last map is 7x7, so a global average gives the same 2048 numbers and also works
  for other input sizes.
* Preprocessing is keras-vggface's `preprocess_input(version=2)`: RGB -> BGR, float, minus
  the VGGFace2 channel means, no scaling.

Keras 3 refuses '/' in layer names, which the file uses ('conv1/7x7_s2/bn'), so layers
are named with '__' in its place; `keras_name` and `file_name` convert one to the other.

The file is in Keras 2's legacy HDF5 weights layout (save_weights_to_hdf5_group): root
attribute `layer_names`; per layer, `f.create_group(layer_name)` with attribute
`weight_names`; datasets created as `group.create_dataset(weight_name)`. h5py reads '/'
as a path separator, so 'conv1/7x7_s2/bn' is the group bn inside 7x7_s2 inside conv1, the
conv's group also holds its BN's group, and gamma lives at
'conv1/7x7_s2/bn/conv1/7x7_s2/bn/gamma:0'. So layers are found through `layer_names` and
weights through `weight_names`, never by listing groups.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..download import download as download_file
from ..errors import WeightsError
from ..paths import howold_home
from .base import ChipSpec, KerasBackbone, file_fingerprint

WEIGHTS_URL = "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/rcmalli_vggface_tf_notop_resnet50.h5"
WEIGHTS_FILENAME = "rcmalli_vggface_tf_notop_resnet50.h5"
EXPECTED_SIZE = 94_694_792
#: keras_vggface.utils.preprocess_input(version=2), in B, G, R order
MEAN_BGR = (91.4953, 103.8827, 131.0912)
BN_EPSILON = 1e-3  # Keras 2's default, used by keras-vggface's RESNET50 (its SENet50 uses 1e-4)
FEATURE_SIZE = 2048
DEFAULT_INPUT_SIZE = 200
CHIP_PADDING = 0.4  # see VGGFace2ResNet50
#: (stage, number of blocks, (reduce, 3x3, increase) filters, stride of the first block)
STAGES = (
    (2, 3, (64, 64, 256), 1),
    (3, 4, (128, 128, 512), 2),
    (4, 6, (256, 256, 1024), 2),
    (5, 3, (512, 512, 2048), 2),
)
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")  # the file's order
SEPARATOR = "__"  # stands for '/' in Keras layer names


def keras_name(file_name: str) -> str:
    """The Keras 3 layer name for a layer name in the weights file ('/' -> '__')."""
    if SEPARATOR in file_name:
        raise ValueError(f"layer name {file_name!r} already contains {SEPARATOR!r}; the mapping would not be one-to-one")
    return file_name.replace("/", SEPARATOR)


def file_name(keras_layer_name: str) -> str:
    """The weights file's layer name for a Keras layer name: the inverse of `keras_name`."""
    return keras_layer_name.replace(SEPARATOR, "/")


# --- architecture as data: what the file must hold -------------------------------------


def conv_specs() -> list[tuple[str, int, int, int]]:
    """Every conv as (file name, kernel size, input channels, filters), in network order."""
    specs = [("conv1/7x7_s2", 7, 3, 64)]
    channels = 64
    for stage, blocks, (reduce, middle, increase), _ in STAGES:
        for block in range(1, blocks + 1):
            prefix = f"conv{stage}_{block}"
            specs += [
                (f"{prefix}_1x1_reduce", 1, channels, reduce),
                (f"{prefix}_3x3", 3, reduce, middle),
                (f"{prefix}_1x1_increase", 1, middle, increase),
            ]
            if block == 1:
                specs.append((f"{prefix}_1x1_proj", 1, channels, increase))
            channels = increase
    return specs


def expected_weights() -> dict[str, dict[str, tuple[int, ...]]]:
    """file layer name -> {weight name: shape} for every layer with weights (53 convs, 53 BNs)."""
    expected: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, kernel, channels_in, filters in conv_specs():
        expected[name] = {"kernel": (kernel, kernel, channels_in, filters)}
        expected[f"{name}/bn"] = {weight: (filters,) for weight in BN_WEIGHTS}
    return expected


# --- the network, one function per block as in keras/src/applications/resnet.py -------


def conv_bn(x, filters: int, kernel: int, name: str, strides: int = 1, padding: str = "valid", relu: bool = True):
    """Conv (no bias) + BatchNorm [+ ReLU], named like keras-vggface's `name` and `name/bn`."""
    import keras

    x = keras.layers.Conv2D(
        filters, kernel, strides=strides, padding=padding, use_bias=False, name=keras_name(name)
    )(x)
    x = keras.layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name=keras_name(f"{name}/bn"))(x)
    if relu:
        x = keras.layers.Activation("relu", name=keras_name(f"{name}/relu"))(x)
    return x


def conv_block(x, filters: tuple[int, int, int], stage: int, block: int, strides: int):
    """First block of a stage: strided 1x1 reduce, 3x3, 1x1 increase, plus a strided projection."""
    import keras

    reduce, middle, increase = filters
    prefix = f"conv{stage}_{block}"
    shortcut = conv_bn(x, increase, 1, f"{prefix}_1x1_proj", strides=strides, relu=False)
    x = conv_bn(x, reduce, 1, f"{prefix}_1x1_reduce", strides=strides)
    x = conv_bn(x, middle, 3, f"{prefix}_3x3", padding="same")
    x = conv_bn(x, increase, 1, f"{prefix}_1x1_increase", relu=False)
    x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return keras.layers.Activation("relu", name=f"{prefix}_relu")(x)


def identity_block(x, filters: tuple[int, int, int], stage: int, block: int):
    """Later blocks of a stage: the same bottleneck around an identity shortcut."""
    import keras

    reduce, middle, increase = filters
    prefix = f"conv{stage}_{block}"
    shortcut = x
    x = conv_bn(x, reduce, 1, f"{prefix}_1x1_reduce")
    x = conv_bn(x, middle, 3, f"{prefix}_3x3", padding="same")
    x = conv_bn(x, increase, 1, f"{prefix}_1x1_increase", relu=False)
    x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
    return keras.layers.Activation("relu", name=f"{prefix}_relu")(x)


def stage_ends() -> tuple[str, ...]:
    """Keras names of the last layer of conv1 and of each of conv2_x .. conv5_x."""
    return ("pool1",) + tuple(f"conv{stage}_{blocks}_relu" for stage, blocks, _, _ in STAGES)


def build_resnet50(input_size: int = 200):
    """The network from preprocessed (N, size, size, 3) BGR input to (N, 2048) features."""
    import keras

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image_bgr")
    x = conv_bn(inputs, 64, 7, "conv1/7x7_s2", strides=2, padding="same")
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, blocks, filters, strides in STAGES:
        x = conv_block(x, filters, stage, 1, strides)
        for block in range(2, blocks + 1):
            x = identity_block(x, filters, stage, block)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="vggface2_resnet50")


# --- the weights file ------------------------------------------------------------------


def resolve_weights(
    path: str | Path | None = None,
    download: bool = True,
    url: str = WEIGHTS_URL,
    expected_size: int | None = EXPECTED_SIZE,
) -> Path:
    """The weights file to use: `path`, else the cached copy, else a fresh download into the cache.

    The cache is $HOWOLD_HOME/weights (default ~/.howold/weights).
    """
    if path is not None:
        return Path(path).expanduser()
    cached = howold_home() / "weights" / WEIGHTS_FILENAME
    if cached.is_file():
        return cached
    if not download:
        raise WeightsError(
            f"weights file {cached} does not exist and downloading is disabled; "
            f"fetch {url} to that path or pass weights=PATH"
        )
    return download_file(url, cached, expected_size=expected_size)


def _load_attribute_list(group, name: str) -> list[str] | None:
    """An attribute holding a list of names, including Keras' chunked form (name0, name1, ...)."""
    if name in group.attrs:
        values = list(np.atleast_1d(group.attrs[name]))
    elif f"{name}0" in group.attrs:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values += list(np.atleast_1d(group.attrs[f"{name}{chunk}"]))
            chunk += 1
    else:
        return None
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]


def _weights_root(handle):
    """The group holding `layer_names`: the root of a save_weights file, 'model_weights' of a saved model."""
    if _load_attribute_list(handle, "layer_names") is None and "model_weights" in handle:
        return handle["model_weights"]
    return handle


def _layer_datasets(root, layer: str) -> dict[str, object] | str:
    """{short weight name: dataset} of one layer, or a description of what is wrong."""
    import h5py

    group = root.get(layer)
    if not isinstance(group, h5py.Group):
        return f"lists layer {layer!r} but has no group for it"
    names = _load_attribute_list(group, "weight_names")
    if names is None:
        return f"has no 'weight_names' attribute on layer {layer!r}"
    datasets = {}
    for full_name in names:
        # 'conv1/7x7_s2/bn/gamma:0' -> 'gamma'; by the last part, so prefixes such as 'bn_1' do not matter
        short = full_name.rsplit("/", 1)[-1].split(":", 1)[0]
        dataset = group.get(full_name)
        if not isinstance(dataset, h5py.Dataset):
            return f"lists weight {full_name!r} of layer {layer!r} but holds no data for it"
        datasets[short] = dataset
    return datasets


def check_weights_file(path: str | Path, expected_size: int | None = EXPECTED_SIZE) -> None:
    """Raise one WeightsError naming the file and its first problem, before any loading.

    Checks the size (unless `expected_size` is None), that it is HDF5 in Keras 2's weights
    layout, and that every layer of the network is there with every weight in its shape.
    """
    import h5py

    path = Path(path)

    def fail(problem: str, separator: str = " ") -> WeightsError:
        return WeightsError(f"weights file {path}{separator}{problem}")

    if not path.is_file():
        raise fail("does not exist")
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        problem = "is truncated" if size < expected_size else "has the wrong size"
        raise fail(f"{problem}: {size:,} bytes, expected {expected_size:,}")
    if not h5py.is_hdf5(path):
        raise fail("is not an HDF5 file")
    try:
        with h5py.File(path, "r") as handle:
            root = _weights_root(handle)
            layer_names = _load_attribute_list(root, "layer_names")
            if layer_names is None:
                raise fail("has no 'layer_names' attribute, so it is not a Keras weights file")
            listed = set(layer_names)
            for layer, weights in expected_weights().items():
                if layer not in listed:
                    raise fail(f"is missing layer {layer!r}")
                datasets = _layer_datasets(root, layer)
                if isinstance(datasets, str):
                    raise fail(datasets)
                for weight, shape in weights.items():
                    if weight not in datasets:
                        raise fail(f"is missing weight {weight!r} of layer {layer!r} (it has {sorted(datasets)})")
                    if tuple(datasets[weight].shape) != shape:
                        raise fail(
                            f"{layer!r} weight {weight!r} has shape {tuple(datasets[weight].shape)} expected {shape}",
                            separator=": ",
                        )
    except OSError as error:  # h5py: truncated or corrupt structures
        raise fail(f"is truncated or corrupt: {error}") from error


def load_vggface2_weights(model, path: str | Path) -> None:
    """Copy every tensor of the file into the layer and variable of the same name.

    By name, not by order, so a reordered file or model cannot silently swap tensors.
    Call `check_weights_file` first for clear messages about bad files.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            root = _weights_root(handle)
            for layer_name, weights in expected_weights().items():
                datasets = _layer_datasets(root, layer_name)
                if isinstance(datasets, str):
                    raise WeightsError(f"weights file {path} {datasets}")
                layer = model.get_layer(keras_name(layer_name))
                for weight in weights:
                    variable = getattr(layer, weight)
                    value = np.asarray(datasets[weight], dtype=np.float32)
                    if tuple(variable.shape) != value.shape:
                        raise WeightsError(
                            f"weights file {path}: {layer_name!r} weight {weight!r} has shape {value.shape} "
                            f"but the model expects {tuple(variable.shape)}"
                        )
                    variable.assign(value)
    except OSError as error:
        raise WeightsError(f"weights file {path} could not be read: {error}") from error


# --- the backbone ----------------------------------------------------------------------


def preprocessing_description(input_size: int) -> str:
    """The preprocessing in words; part of feature-cache keys, so it names every choice."""
    return (
        f"dlib 5-point aligned chip {input_size}x{input_size} padding {CHIP_PADDING}, RGB->BGR float32 minus "
        f"VGGFace2 means B,G,R={MEAN_BGR} (keras-vggface preprocess_input version 2)"
    )


class VGGFace2ResNet50(KerasBackbone):
    """ResNet50 trained on VGGFace2 identities: 2048 features that carry age, gender and ethnicity cues.

    Chips are 200x200 (the network was trained on 224 crops; 200 gives the same 7x7 final map)
    with dlib padding 0.4. VGGFace2 crops are loose: the detector box is enlarged 1.3x "to
    include the whole head" and 224 of 256 pixels are kept, so the face is a bit over half the
    crop's width. With padding 0.4, dlib's landmark template spans 1/1.8 = 56% of the chip,
    which shows hair and chin as in training, where dlib's default 0.25 (67%) would be tighter.
    """

    name = "vggface2-resnet50"
    feature_size = FEATURE_SIZE
    stages = stage_ends()
    # class-level values describe the default size; instances set their own
    chip = ChipSpec(size=DEFAULT_INPUT_SIZE, padding=CHIP_PADDING)
    preprocessing = preprocessing_description(DEFAULT_INPUT_SIZE)

    def __init__(self, weights: str | Path | None = None, input_size: int = DEFAULT_INPUT_SIZE, download: bool = True):
        if input_size < 32:
            raise ValueError(f"input_size must be at least 32 pixels, got {input_size}")
        self.input_size = input_size
        self.chip = ChipSpec(size=input_size, padding=CHIP_PADDING)
        self.preprocessing = preprocessing_description(input_size)
        self.weights_path = resolve_weights(weights, download=download)
        # An explicit file may be a re-saved copy with another size; its structure is still checked.
        check_weights_file(self.weights_path, expected_size=None if weights is not None else EXPECTED_SIZE)
        self._model = build_resnet50(input_size)
        load_vggface2_weights(self._model, self.weights_path)
        self._fingerprint = file_fingerprint(self.weights_path)

    @property
    def model(self):
        return self._model

    def preprocess(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[-1] != 3:
            raise ValueError(f"expected chips of shape (N, {self.input_size}, {self.input_size}, 3), got {chips.shape}")
        return chips[..., ::-1].astype(np.float32) - np.asarray(MEAN_BGR, np.float32)

    def fingerprint(self) -> str:
        return self._fingerprint
