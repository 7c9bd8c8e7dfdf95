"""An int8 copy of the network's ONNX graph, calibrated on real training chips.

Why: ONNX Runtime runs int8 convolutions and matrix products with integer kernels (VNNI's
dot products where the CPU has them, AVX2's pairwise ones where it does not), so the network
can run faster per face at a cost in accuracy that `benchmarks/bench_int8.py` measures on
UTKFace's and FairFace's validation parts. Static quantisation fixes each activation's
scale from calibration chips taken, with a fixed seed, from the training parts of the same
splits (seed 42, 15 % validation) the heads were trained on, so the same data gives the same file.

Not yet an Analyzer option: on an AVX2 CPU without VNNI, ONNX Runtime's int8 matmul is no
faster than float32 and the int8 network ran at 0.84-0.95x float32's speed per face, with 5-way
and 7-way race accuracies moving by more than 0.2 points (`benchmarks/bench_int8.py`).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import HowoldError

class QuantizationError(HowoldError):
    """The int8 graph cannot be made (no calibration data, an unknown setting)."""


@dataclass(frozen=True)
class QuantizeConfig:
    """How to quantise. `method` "static" (activations' scales from calibration chips) or
    "dynamic" (computed per batch at run time); `format` "qdq" (QuantizeLinear/DequantizeLinear
    pairs ONNX Runtime fuses into integer kernels) or "qoperator" (QLinearConv etc. written out);
    `float_ops`: op types left in float32; `faces`: calibration chips per dataset, drawn with
    `seed` from its training part."""

    method: str = "static"
    format: str = "qdq"
    per_channel: bool = True
    activations: str = "uint8"
    #: 7-bit weights, so that the u8 x s8 pair sums of CPUs without VNNI (AVX2's vpmaddubsw)
    #: cannot saturate: with 8-bit weights the predicted ages moved 3x more on such a CPU
    reduce_range: bool = True
    calibration: str = "minmax"
    #: the heads' layers: a thousandth of the work, and quantised probabilities lose the age's spread
    float_ops: tuple[str, ...] = ("MatMul", "Gemm", "Softmax")
    faces: int = 200
    seed: int = 0

    def describe(self) -> dict:
        return asdict(self)


def training_chips(backbone, datasets: list, count: int, seed: int = 0, detector: str | None = None, progress: bool = False) -> np.ndarray:
    """`count` aligned chips from each dataset's training part (split_dataset's seed-42 split),
    drawn with `seed`, aligned as features.py aligns them for training (loose crops on the
    detector's landmarks)."""
    from .data import split_dataset

    chips = []
    for dataset in datasets:
        train, _ = split_dataset(dataset)
        picked = np.sort(np.random.default_rng(seed).choice(len(train), size=min(count, len(train)), replace=False))
        chips.append(dataset_chips(backbone, train.subset(picked), detector, progress))
    return np.concatenate(chips)


def dataset_chips(backbone, dataset, detector: str | None = None, progress: bool = False) -> np.ndarray:
    """The plain (unaugmented) aligned chip of every face of `dataset`, uint8 (N, size, size, 3)."""
    from .alignment import Aligner
    from .detectors import DEFAULT_DETECTOR
    from .features import AugmentConfig, dataset_boxes, dataset_views

    boxes = landmarks = None
    if dataset.loose_crops:
        boxes, _, landmarks = dataset_boxes(dataset, detector or DEFAULT_DETECTOR, progress=progress)
    aligner = Aligner()
    return dataset_views(dataset, range(len(dataset)), backbone, aligner, AugmentConfig(views=1), boxes, landmarks)


def float_graph(path: str | Path):
    """The float32 network graph of an exported ONNX file (external data read in): the
    quantiser's input. Its float16-stored weights stay behind Cast nodes, which
    `quantize` folds before quantising."""
    import onnx

    if not Path(path).is_file():
        raise QuantizationError(f"{path}: no such ONNX file; write it with `howold export`")
    return onnx.load(str(path))


class _Chips:
    """ONNX Runtime's CalibrationDataReader over preprocessed chips, one at a time (its
    histogram calibrators need batches of one shape)."""

    def __init__(self, inputs: np.ndarray, batch_size: int = 1):
        self.batches = [inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {"chips": self.batches[self.position - 1]}

    def rewind(self):
        self.position = 0


_CALIBRATIONS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def quantize(model, inputs: np.ndarray | None, config: QuantizeConfig = QuantizeConfig()):
    """The int8 ModelProto of a float32 network graph (input "chips"); `inputs` are
    preprocessed calibration chips (needed for static quantisation)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if config.method not in ("static", "dynamic"):
        raise QuantizationError(f"unknown quantisation method {config.method!r}; choose static or dynamic")
    if config.format not in ("qdq", "qoperator") or config.activations not in ("uint8", "int8") or config.calibration not in _CALIBRATIONS:
        raise QuantizationError(f"unknown quantisation settings {config.format!r}, {config.activations!r}, {config.calibration!r}; "
                                f"choose format qdq or qoperator, activations uint8 or int8, calibration {', '.join(_CALIBRATIONS)}")
    if config.method == "static" and (inputs is None or not len(inputs)):
        raise QuantizationError("static quantisation needs calibration chips")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    with tempfile.TemporaryDirectory() as folder:
        source, prepared, output = (Path(folder) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(model, source)
        # ONNX Runtime's basic optimisations first: constants folded (float16 weights' Casts),
        # the batch norms' Mul/Add folded into the convolutions they follow
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        excluded = [node.name for node in onnx.load(prepared).graph.node if node.op_type in config.float_ops]
        common = dict(per_channel=config.per_channel, reduce_range=config.reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=excluded or None)
        if config.method == "dynamic":
            quantize_dynamic(prepared, output, **common)
        else:
            quantize_static(
                prepared,
                output,
                _Chips(inputs),
                quant_format=QuantFormat.QDQ if config.format == "qdq" else QuantFormat.QOperator,
                activation_type=types[config.activations],
                calibrate_method=getattr(CalibrationMethod, _CALIBRATIONS[config.calibration]),
                **common,
            )
        return onnx.load(output)
