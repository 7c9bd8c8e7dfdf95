"""Batch analysis of a photo collection: memory, streaming overhead, Ray Data overhead.

Usage: nice -n 10 python benchmarks/bench_batch.py [--memory 5000] [--throughput 1000] [--engines 2000]
       [--detector yunet] [--skip memory,throughput,engines]

Images: UTKFace and FairFace files from ../shared/data, alternating (one face each, 200x200
and 224x224 JPEG); a part is skipped when they are missing.

1. memory: peak RSS after 500 images of `Analyzer.analyze_stream` and after `--memory`.
   Goal: within 100 MB.
2. throughput: `analyze_stream` vs. the algorithm of the analyze_many it replaced (load
   every image, detect and align each, then predict all the chips in batches of 32), on
   the same `--throughput` images, same Analyzer, each timed `--repeats` times alternately
   (the best counts). Goal: streaming >= 0.9x. The answers are compared too.
3. engines: the local engine vs. the Ray engine (Ray started here, one actor per CPU) on
   `--engines` images, end to end (the engine's model loading included; Ray's start-up
   timed apart), in the same run. Goal: Ray >= 0.85x local.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_analyze import rss_mb  # noqa: E402
from face import Analyzer  # noqa: E402
from face.images import load_image  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def collection(count: int) -> list[str]:
    """`count` paths, UTKFace and FairFace alternately ([] when either folder is missing)."""
    utk = sorted((DATA / "utkface").glob("*.jpg"))
    fair = sorted((DATA / "fairface" / "train").glob("*.jpg"), key=lambda p: int(p.stem))
    if not utk or not fair:
        return []
    mixed = [str(path) for pair in zip(utk, fair) for path in pair]
    if count > len(mixed):
        raise SystemExit(f"only {len(mixed)} images in {DATA}")
    return mixed[:count]


def bench_memory(analyzer: Analyzer, sources: list[str], checkpoint: int = 500) -> None:
    peaks = {}
    started = time.perf_counter()
    for number, _ in enumerate(analyzer.analyze_stream(sources, batch_size=32), 1):
        if number in (checkpoint, len(sources)):
            peaks[number] = rss_mb()[1]
    seconds = time.perf_counter() - started
    growth = peaks[len(sources)] - peaks[checkpoint]
    print(f"memory: peak RSS after {checkpoint} images {peaks[checkpoint]:.0f} MiB, after {len(sources)} {peaks[len(sources)]:.0f} MiB: "
          f"+{growth:.0f} MiB (goal <= 100) [{len(sources) / seconds:.1f} images/s]", flush=True)


def analyze_many_before(analyzer: Analyzer, sources: list[str], batch_size: int = 32) -> list[dict]:
    """The analyze_many this work replaced: load everything, then detect and align, then
    one prediction over all the chips. (Boxes only, plus the answers, for comparison.)"""
    images = [load_image(source) for source in sources]
    found = [analyzer.detect(image) for image in images]
    chips = [analyzer.chips(image, faces) for image, faces in zip(images, found) if faces]
    answers = analyzer.predict_chips(np.concatenate(chips), 1, batch_size) if chips else []
    return answers


def bench_throughput(analyzer: Analyzer, sources: list[str], repeats: int) -> None:
    analyzer.analyze_many(sources[:32])  # warm-up
    before, stream = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        old = analyze_many_before(analyzer, sources)
        before.append(time.perf_counter() - started)
        started = time.perf_counter()
        new = analyzer.analyze_many(sources, batch_size=32)
        stream.append(time.perf_counter() - started)
    old_rate, new_rate = len(sources) / min(before), len(sources) / min(stream)
    new_faces = [face for result in new for face in result.get("faces", [])]
    worst = max((abs(a["age"] - b["age"]) for a, b in zip(sorted(old, key=lambda a: a["age"]), sorted(new_faces, key=lambda a: a["age"]))), default=0.0)
    print(f"throughput on {len(sources)} images (best of {repeats}): before {old_rate:.1f} images/s, streaming {new_rate:.1f} images/s: "
          f"{new_rate / old_rate:.2f}x (goal >= 0.9); faces {len(old)} vs {len(new_faces)}, largest age difference {worst:.4f}", flush=True)


def bench_engines(sources: list[str], options: dict, cpus: int) -> None:
    import ray

    from face.engines import create_engine
    from face.engines.ray import RayOptions

    rates = {}
    started = time.perf_counter()
    with create_engine("local") as engine:
        count = sum(1 for _ in engine.run(sources, options, 32))
    rates["local"] = count / (time.perf_counter() - started)
    with create_engine("ray", options=RayOptions(local_cpus=cpus)) as engine:
        started = time.perf_counter()
        engine._connect()
        ray_start = time.perf_counter() - started
        started = time.perf_counter()
        count = sum(1 for _ in engine.run(sources, options, 32))
        rates["ray"] = count / (time.perf_counter() - started)
        actors = engine.pool_size()
    assert not ray.is_initialized()
    with_start = len(sources) / (len(sources) / rates["ray"] + ray_start)
    print(f"engines on {len(sources)} images: local {rates['local']:.1f} images/s, ray ({actors} actors of 1 CPU) {rates['ray']:.1f} images/s "
          f"(+ {ray_start:.1f} s to start Ray): {rates['ray'] / rates['local']:.2f}x (goal >= 0.85); "
          f"counting Ray's start {with_start:.1f} images/s, {with_start / rates['local']:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", type=int, default=5000)
    parser.add_argument("--throughput", type=int, default=1000)
    parser.add_argument("--engines", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="throughput: runs of each, alternately; the best counts")
    parser.add_argument("--detector", default=None, help="default: the Analyzer's")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    options = {"detector": args.detector} if args.detector else {}
    print(f"{os.cpu_count()} CPUs; detector {args.detector or 'default'}", flush=True)
    if not collection(2):
        print(f"skipped: no UTKFace/FairFace images in {DATA}")
        return
    analyzer = Analyzer(**options)
    if "memory" not in skip:
        bench_memory(analyzer, collection(args.memory))
    if "throughput" not in skip:
        bench_throughput(analyzer, collection(args.throughput), args.repeats)
    if "engines" not in skip:
        del analyzer
        bench_engines(collection(args.engines), options, args.cpus)


if __name__ == "__main__":
    main()
