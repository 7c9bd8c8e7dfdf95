"""dlib's serialization format, read: the layer records of a dlib network file.

Why apart: both the Keras backbone (`dlib_resnet_keras`) and the Keras layers it builds
the network from (`dlib_resnet_keras_layers`) need these records, and neither Keras nor
TensorFlow is needed to read them.

The format, as read from dlib's public source (serialize.h, dnn/core.h, dnn/layers.h,
dnn/input.h, cuda/tensor.h):

* integers: one control byte (bit 7 = negative, low 4 bits = byte count) then the
  absolute value in that many little-endian bytes;
* floats (scalars): the mantissa then the exponent, both integers; value = m * 2**e;
* bools: the ASCII byte '0' or '1'; strings: an integer length then the bytes;
* tensors: version 2, then n, k, nr, nc, then n*k*nr*nc little-endian float32;
  alias tensors (views into a layer's params): version 1 then n, k, nr, nc;
* a network nests: each wrapper writes its version, then its whole sub-network, then its
  own layer's record. So the file opens with the version numbers of every wrapper from the
  output inwards (add_layer = 2, tag/skip = 1, the layer on the input = 3), then the input
  layer, then the layer records from the input outwards, each a version string
  ("con_4", "affine_", "relu_", ...) and its fields followed by the wrapper's bookkeeping
  (three bools and three, usually empty, tensors).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import WeightsError

#: Version numbers dlib writes for its network wrappers (dnn/core.h).
ADD_LAYER_VERSION = 2
TAG_OR_SKIP_VERSION = 1
ADD_LAYER_ON_INPUT_VERSIONS = (2, 3)


@dataclass
class DlibLayer:
    """One record of a dlib network: its kind, its fields and where it starts in the file."""

    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, tag_or_skip, fc, loss_metric
    params: dict[str, Any] = field(default_factory=dict)
    offset: int = 0


class DlibReader:
    """Reads dlib's primitive types from bytes, raising WeightsError with the file and offset."""

    def __init__(self, data: bytes, name: str):
        self.data = memoryview(data)
        self.name = name
        self.pos = 0

    def error(self, problem: str, at: int | None = None) -> WeightsError:
        where = self.pos if at is None else at
        return WeightsError(f"{self.name}: {problem} at byte offset {where} (file has {len(self.data)} bytes)")

    def read_bytes(self, count: int, what: str) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise self.error(f"truncated or corrupt: needs {count} bytes for {what}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def read_int(self, what: str = "an integer") -> int:
        start = self.pos
        control = self.read_bytes(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.error(f"corrupt: bad integer control byte 0x{control:02x} for {what}", start)
        value = int.from_bytes(self.read_bytes(size, what), "little")
        return -value if control & 0x80 else value

    def read_float(self, what: str = "a float") -> float:
        mantissa = self.read_int(what)
        exponent = self.read_int(what)
        return math.ldexp(mantissa, exponent)

    def read_bool(self, what: str = "a bool") -> bool:
        start = self.pos
        byte = bytes(self.read_bytes(1, what))
        if byte not in (b"0", b"1"):
            raise self.error(f"corrupt: expected '0' or '1' for {what}, found {byte!r}", start)
        return byte == b"1"

    def read_string(self, what: str = "a string") -> str:
        start = self.pos
        length = self.read_int(what)
        if length > 1 << 16:
            raise self.error(f"corrupt: implausible string length {length} for {what}", start)
        raw = bytes(self.read_bytes(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"corrupt: {what} is not text: {raw[:32]!r}", start) from None

    def at_string_starting(self, prefix: bytes) -> bool:
        """Whether a string starting with `prefix` (or, at a cut-off end, part of it) is next."""
        start = self.pos
        try:
            length = self.read_int()
            head = bytes(self.data[self.pos : self.pos + len(prefix)])
            at_end = self.pos == len(self.data)
            return length >= len(prefix) and prefix.startswith(head) and (len(head) > 0 or at_end)
        except WeightsError:
            return False
        finally:
            self.pos = start

    def read_shape(self, what: str) -> tuple[int, int, int, int]:
        shape = tuple(self.read_int(what) for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.error(f"corrupt: negative dimension {shape} in {what}")
        return shape  # type: ignore[return-value]

    def read_tensor(self, what: str = "a tensor") -> np.ndarray:
        """A resizable_tensor: (n, k, nr, nc) float32."""
        start = self.pos
        version = self.read_int(what)
        if version != 2:
            raise self.error(f"corrupt: tensor version {version} (expected 2) in {what}", start)
        shape = self.read_shape(what)
        count = int(np.prod(shape))
        values = np.frombuffer(self.read_bytes(4 * count, what), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def read_alias_tensor(self, what: str = "an alias tensor") -> tuple[int, int, int, int]:
        """An alias_tensor: only a shape, a view into the layer's params."""
        start = self.pos
        version = self.read_int(what)
        if version != 1:
            raise self.error(f"corrupt: alias tensor version {version} (expected 1) in {what}", start)
        return self.read_shape(what)


def _read_input_rgb_image_sized(r: DlibReader) -> dict[str, Any]:
    return {
        "avg_rgb": [r.read_float("avg_red"), r.read_float("avg_green"), r.read_float("avg_blue")],
        "rows": r.read_int("input rows"),
        "cols": r.read_int("input cols"),
    }


def _read_con(r: DlibReader) -> dict[str, Any]:
    params = r.read_tensor("con params")
    fields = {name: r.read_int(f"con {name}") for name in ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
    filters = r.read_alias_tensor("con filters")
    biases = r.read_alias_tensor("con biases")
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.read_float(f"con {name} multiplier")
    n_filter = int(np.prod(filters))
    n_bias = int(np.prod(biases))
    if params.size != n_filter + n_bias or filters[0] != fields["num_filters"] or n_bias != fields["num_filters"]:
        raise r.error(f"corrupt: con params hold {params.size} values for filters {filters} and biases {biases}")
    flat = params.reshape(-1)
    fields["filters"] = flat[:n_filter].reshape(filters)  # (out, in, rows, cols)
    fields["biases"] = flat[n_filter:].copy()
    return fields


def _read_affine(r: DlibReader) -> dict[str, Any]:
    params = r.read_tensor("affine params")
    gamma = r.read_alias_tensor("affine gamma")
    beta = r.read_alias_tensor("affine beta")
    mode = r.read_int("affine mode")
    size = int(np.prod(gamma))
    if mode != 0 or params.size != size + int(np.prod(beta)):
        raise r.error(f"unsupported: affine layer in mode {mode} with {params.size} params (need conv mode 0)")
    flat = params.reshape(-1)
    return {"gamma": flat[:size].copy(), "beta": flat[size:].copy()}


def _read_pool(kind: str) -> Callable[[DlibReader], dict[str, Any]]:
    def read(r: DlibReader) -> dict[str, Any]:
        return {name: r.read_int(f"{kind} {name}") for name in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}

    return read


def _read_fc(r: DlibReader) -> dict[str, Any]:
    num_outputs = r.read_int("fc num_outputs")
    num_inputs = r.read_int("fc num_inputs")
    params = r.read_tensor("fc params")
    weights = r.read_alias_tensor("fc weights")
    r.read_alias_tensor("fc biases")
    bias_mode = r.read_int("fc bias mode")  # 0 = has bias, 1 = no bias
    for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
        r.read_float(f"fc {name} multiplier")
    size = num_inputs * num_outputs
    has_bias = bias_mode == 0
    if params.size != size + (num_outputs if has_bias else 0) or weights[:2] != (num_inputs, num_outputs):
        raise r.error(f"corrupt: fc params hold {params.size} values for {num_inputs}x{num_outputs} weights")
    flat = params.reshape(-1)
    return {
        "num_inputs": num_inputs,
        "num_outputs": num_outputs,
        "weights": flat[:size].reshape(num_inputs, num_outputs),
        "biases": flat[size:].copy() if has_bias else None,
    }


def _read_loss_metric(r: DlibReader) -> dict[str, Any]:
    return {"margin": r.read_float("loss margin"), "distance_threshold": r.read_float("loss distance threshold")}


#: dlib's version string of each layer record -> (our kind, reader of its fields).
LAYER_READERS: dict[str, tuple[str, Callable[[DlibReader], dict[str, Any]]]] = {
    "input_rgb_image_sized": ("input", _read_input_rgb_image_sized),
    "con_4": ("con", _read_con),
    "affine_": ("affine", _read_affine),
    "relu_": ("relu", lambda r: {}),
    "max_pool_2": ("max_pool", _read_pool("max_pool")),
    "avg_pool_2": ("avg_pool", _read_pool("avg_pool")),
    "add_prev_": ("add_prev", lambda r: {}),
    "fc_2": ("fc", _read_fc),
    "loss_metric_2": ("loss_metric", _read_loss_metric),
}


def read_layer(r: DlibReader) -> DlibLayer:
    """One layer record: its version string, then the fields that version has."""
    start = r.pos
    version = r.read_string("a layer's version string")
    if version not in LAYER_READERS:
        raise r.error(f"unsupported or corrupt layer record {version[:40]!r}", start)
    kind, reader = LAYER_READERS[version]
    return DlibLayer(kind, reader(r), start)


def _skip_add_layer_state(r: DlibReader, on_input: bool, version: int) -> None:
    """An add_layer's bookkeeping after its layer: 3 bools, 3 tensors (empty once cleaned)."""
    for _ in range(3):
        r.read_bool("add_layer state")
    for _ in range(3):
        r.read_tensor("add_layer cached tensor")
    if on_input and version >= 3:
        r.read_int("sample expansion factor")


def parse_dlib_net(data: bytes, name: str = "<bytes>") -> list[DlibLayer]:
    """The layers of a serialized dlib loss network, from output (loss) to input."""
    r = DlibReader(data, name)
    if r.read_int("the loss layer version") != 1:
        raise r.error("not a dlib network file (loss layer version is not 1)", 0)
    loss = read_layer(r)
    if loss.kind != "loss_metric":
        raise r.error(f"expected a loss layer first, found {loss.kind}", loss.offset)

    # Wrapper versions from the output inwards, until the input layer's version string.
    wrappers: list[int] = []
    while not r.at_string_starting(b"input"):
        start = r.pos
        version = r.read_int("a layer wrapper version")
        if version not in (TAG_OR_SKIP_VERSION, ADD_LAYER_VERSION, *ADD_LAYER_ON_INPUT_VERSIONS):
            raise r.error(f"corrupt: unexpected layer wrapper version {version}", start)
        wrappers.append(version)
        if len(wrappers) > 10_000:
            raise r.error("corrupt: no input layer found")
    if not wrappers or wrappers[-1] not in ADD_LAYER_ON_INPUT_VERSIONS:
        raise r.error("unsupported: the layer on the input is not a plain add_layer")

    layers = [read_layer(r)]  # from input to output
    for depth, version in enumerate(reversed(wrappers)):
        if depth > 0 and version == TAG_OR_SKIP_VERSION:
            layers.append(DlibLayer("tag_or_skip", {}, r.pos))
            continue
        layers.append(read_layer(r))
        _skip_add_layer_state(r, on_input=depth == 0, version=version)
    layers.append(loss)
    if r.pos != len(r.data):
        raise r.error(f"corrupt: {len(r.data) - r.pos} bytes left after the network")
    return layers[::-1]


def read_dlib_net(path: str | Path) -> list[DlibLayer]:
    """Parse a dlib network file (see `parse_dlib_net`), with WeightsError on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read dlib weights: {error.strerror or error}") from None
    return parse_dlib_net(data, str(path))
