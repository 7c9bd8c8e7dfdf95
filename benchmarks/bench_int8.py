"""The network in int8 against float32, in one run: speed per face, accuracy on the
validation parts, and each network's rate against the machine's matmul limits.

    python benchmarks/bench_int8.py [--limit N] [--rounds 7] [--save weights/x-int8.onnx]

1. The int8 graph: the shipped model's ONNX file (backbone and heads, as the Analyzer runs
   it) quantised by `face.quantization.quantize` with its default settings (static,
   QDQ, per-channel int8 weights, uint8 activations on a 7-bit range, heads in float32),
   calibrated on chips drawn with a fixed seed from the training parts of UTKFace and FairFace
   (split_dataset: seed 42, 15 % validation).
2. Speed per face, batches of 1 and 32: wall time with the Analyzer's own session settings
   (all cores), float32 and int8 alternated in blocks, medians; and CPU time on one thread
   (steadier on a shared machine), best of the rounds.
3. Rates: the networks' multiply-adds per CPU-second on one thread against numpy's float32
   matmul and ONNX Runtime's uint8 x int8 MatMulInteger (1024^3), the machine's float32 and
   int8 limits. Whether the CPU has VNNI (its integer dot products) decides the int8 limit.
4. Accuracy on the validation parts, plain and mirrored chips averaged as `howold evaluate`
   does: UTKFace's (2,956 aligned crops) and FairFace's (3,000 loose crops, detected with
   YuNet and aligned on its landmarks). Age MAE (UTKFace; FairFace has age bins only, so its
   age-bin accuracy instead), gender, 5-way and 7-way race.
5. The gates: every accuracy moves by at most 0.05 years (age MAE) or 0.2 points, on both
   parts, and int8 is at least 1.5x float32's speed per face at both batch sizes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# numpy's BLAS on one thread, as the networks are timed on one thread for the rates
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_latency import cpu_times, stolen  # noqa: E402

DATA = ROOT.parent / "shared/data"
OUTPUTS = ["age", "gender", "race"]
#: the shipped model's backbone: multiply-adds of one chip (bench_latency.multiply_adds)
MULTIPLY_ADDS = 0.271e9
MAE_BOUND = 0.05
POINTS_BOUND = 0.002
SPEED_GOAL = 1.5


def session(model_bytes: bytes, threads: int | None):
    """The Analyzer's session (threads None) or one on `threads` threads that does not spin."""
    import onnxruntime

    from face.runtimes.onnx_runtime import create_session

    if threads is None:
        return create_session(model_bytes)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def cpu_flags() -> set[str]:
    try:
        line = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(line.split(":", 1)[1].split())


def matmul_limits(rounds: int) -> dict[str, float]:
    """Multiply-adds per CPU-second on one thread: numpy float32 and ONNX Runtime's u8 x s8
    MatMulInteger, 1024 x 1024 x 1024, best of `rounds`."""
    from onnx import TensorProto, helper, numpy_helper

    n = 1024
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    int8 = session(model.SerializeToString(), threads=1)
    a8 = rng.integers(0, 256, (n, n)).astype(np.uint8)
    return {
        "float32": n**3 / best_cpu_seconds(lambda: a @ b, rounds),
        "int8": n**3 / best_cpu_seconds(lambda: int8.run(None, {"A": a8}), rounds),
    }


def best_cpu_seconds(work, rounds: int) -> float:
    work()
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best


def speeds(models: dict[str, bytes], chips: np.ndarray, rounds: int) -> dict:
    """ms per face: wall (the Analyzer's sessions, alternated blocks, medians) and CPU time
    on one thread (best), at batch sizes 1 and 32."""
    results = {}
    for threads, label in ((None, "wall"), (1, "cpu1")):
        sessions = {name: session(data, threads) for name, data in models.items()}
        for batch in (1, 32):
            x = chips[:batch]
            times: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(rounds):
                for name, runner in sessions.items():
                    runner.run(OUTPUTS, {"chips": x})  # the block's first run is not counted
                    for _ in range(max(1, 4 // batch)):
                        if label == "wall":
                            started = time.perf_counter()
                            runner.run(OUTPUTS, {"chips": x})
                            times[name].append((time.perf_counter() - started) / batch)
                        else:
                            times[name].append(best_cpu_seconds(lambda: runner.run(OUTPUTS, {"chips": x}), 1) / batch)
            pick = statistics.median if label == "wall" else min
            results[(label, batch)] = {name: pick(values) * 1000 for name, values in times.items()}
    return results


def probabilities(runner, chips: np.ndarray, preprocess) -> dict[str, np.ndarray]:
    """Plain and mirrored chips through the network, averaged, in batches of 32."""
    views = []
    for view in (chips, chips[:, :, ::-1]):
        parts = [runner.run(OUTPUTS, {"chips": preprocess(np.ascontiguousarray(view[s : s + 32]))}) for s in range(0, len(view), 32)]
        views.append([np.concatenate(p) for p in zip(*parts)])
    return {name: (views[0][i] + views[1][i]) / 2 for i, name in enumerate(OUTPUTS)}


def accuracy(models: dict[str, bytes], parts: dict, backbone) -> dict:
    from face.evaluation import compute_metrics
    from face.readout import expected_age
    from face.quantization import dataset_chips

    sessions = {name: session(data, None) for name, data in models.items()}
    results = {}
    for part, dataset in parts.items():
        started = time.perf_counter()
        chips = dataset_chips(backbone, dataset, progress=False)
        outputs = {name: probabilities(runner, chips, backbone.preprocess) for name, runner in sessions.items()}
        metrics = {name: compute_metrics(out, dataset.labels()) for name, out in outputs.items()}
        ages = [expected_age(out["age"].astype(np.float64)) for out in outputs.values()]
        metrics["age_shift"] = float(np.abs(ages[0] - ages[1]).mean())
        metrics["largest_difference"] = float(max(np.abs(outputs["float32"][k] - outputs["int8"][k]).max() for k in OUTPUTS))
        results[part] = metrics
        print(f"  {part}: {len(dataset)} faces, {time.perf_counter() - started:.0f} s", flush=True)
    return results


def validation_parts(limit: int | None) -> tuple[dict, list]:
    """{part: validation Dataset} and the training Datasets, for the parts found in ../shared/data."""
    from face.data import load_named, split_dataset

    parts, training = {}, []
    for kind, folder in (("utkface", DATA / "utkface"), ("fairface", DATA / "fairface")):
        if not folder.is_dir():
            print(f"  {kind}: {folder} absent, skipped")
            continue
        dataset = load_named(kind, folder)
        train, validation = split_dataset(dataset)
        parts[kind] = validation if limit is None else validation.subset(range(min(limit, len(validation))))
        training.append(dataset)
    return parts, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="validation faces per part (default: all)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--save", type=Path, default=None, help="also write the int8 graph there")
    args = parser.parse_args()

    from face import Analyzer
    from face.quantization import QuantizeConfig, float_graph, quantize, training_chips

    flags = cpu_flags()
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    print(f"CPU: {os.cpu_count()} cores; AVX2 {'avx2' in flags}, AVX-512 {'avx512f' in flags}, VNNI: {', '.join(vnni) or 'none'}")
    analyzer = Analyzer()
    backbone = analyzer.backbone
    config = QuantizeConfig()
    parts, training = validation_parts(args.limit)
    if not training:
        sys.exit("no training data in ../shared/data: int8 needs calibration chips")
    started = time.perf_counter()
    calibration = backbone.preprocess(training_chips(backbone, training, config.faces, config.seed))
    graph = float_graph(analyzer.runtime.model_path)  # the shipped ONNX file the Analyzer runs
    models = {"float32": graph.SerializeToString(), "int8": quantize(graph, calibration, config).SerializeToString()}
    print(f"\n1. int8 graph: {len(calibration)} calibration chips, {time.perf_counter() - started:.0f} s, "
          f"{len(models['int8']) / 1e6:.1f} MB (float32 {len(models['float32']) / 1e6:.1f} MB); {config.describe()}")
    if args.save:
        args.save.write_bytes(models["int8"])
        print(f"  written to {args.save}")

    chips = np.ascontiguousarray(np.concatenate([calibration] * 2)[:32])
    before = cpu_times()
    speed = speeds(models, chips, args.rounds)
    print(f"\n2. Speed per face, ms ({stolen(before, cpu_times())})")
    print(f"  {'':38s} {'float32':>8s} {'int8':>8s} {'speed-up':>9s}")
    for (label, batch), times in speed.items():
        what = f"wall, Analyzer's session, batch {batch}" if label == "wall" else f"CPU time, 1 thread, batch {batch}"
        print(f"  {what:38s} {times['float32']:8.2f} {times['int8']:8.2f} {times['float32'] / times['int8']:8.2f}x")

    limits = matmul_limits(args.rounds)
    print("\n3. Rates on one thread, G multiply-adds per CPU-second (batch 32)")
    print(f"  matmul limits: numpy float32 {limits['float32'] / 1e9:.1f}, ONNX Runtime int8 (u8 x s8) {limits['int8'] / 1e9:.1f} "
          f"({limits['int8'] / limits['float32']:.2f}x float32)")
    for name in ("float32", "int8"):
        rate = MULTIPLY_ADDS / (speed[("cpu1", 32)][name] / 1000)
        print(f"  network {name:7s} {rate / 1e9:6.1f}: {rate / limits['float32'] * 100:4.0f}% of the float32 limit, "
              f"{rate / limits['int8'] * 100:4.0f}% of the int8 limit")

    print("\n4. Accuracy on the validation parts, plain and mirrored views averaged")
    scores = accuracy(models, parts, backbone)
    gates = {}
    print(f"  {'part':9s} {'metric':18s} {'float32':>8s} {'int8':>8s} {'change':>8s} {'bound':>6s}")
    for part, metrics in scores.items():
        names = ["age_mae"] if metrics["float32"]["age_mae"] is not None else ["age_bin_accuracy"]
        for name in names + ["gender_accuracy", "race_accuracy", "race7_accuracy"]:
            a, b = metrics["float32"].get(name), metrics["int8"].get(name)
            if a is None or b is None:
                continue
            bound = MAE_BOUND if name == "age_mae" else POINTS_BOUND
            scale = 1 if name == "age_mae" else 100
            gates[f"{part} {name}"] = abs(b - a) <= bound + 1e-9
            print(f"  {part:9s} {name:18s} {a * scale:8.3f} {b * scale:8.3f} {(b - a) * scale:+8.3f} {bound * scale:6.2f}"
                  f"  {'pass' if gates[f'{part} {name}'] else 'FAIL'}")
        print(f"  {part:9s} mean |predicted age change| {metrics['age_shift']:.3f} years, largest probability change {metrics['largest_difference']:.3f}")

    for batch in (1, 32):
        ratio = speed[("wall", batch)]["float32"] / speed[("wall", batch)]["int8"]
        gates[f"speed-up batch {batch} >= {SPEED_GOAL}x"] = ratio >= SPEED_GOAL
    print("\n5. Gates")
    for name, passed in gates.items():
        print(f"  {'pass' if passed else 'FAIL'}  {name}")
    failed = [name for name, passed in gates.items() if not passed]
    both = {"utkface", "fairface"} <= set(scores)
    verdict = f"fails {len(failed)} of {len(gates)} gates" if failed else "passes every gate"
    print(f"  int8 {verdict}{'' if both else ' (not both parts measured)'}: the default precision "
          f"{'may be int8' if not failed and both else 'stays float32'}")


if __name__ == "__main__":
    main()
