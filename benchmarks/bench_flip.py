"""What flip averaging costs: the network's time per face with and without the mirrored chip,
and a whole analyze call per demo photo (detection included), with the default runtime.

    python benchmarks/bench_flip.py [--repeats 15]

Prints the median over `--repeats` calls. The mirrored chips go through in the same batches as
the plain ones, so a face costs one more pass through the network, not one more call.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from face import Analyzer  # noqa: E402
from face.images import load_image  # noqa: E402

DEMO = ROOT.parent / "shared" / "demo"
PHOTOS = ("nasa_astronaut_group21_2013.png", "obama_family_2011.jpg", "solvay_conference_1927.jpg")


def median_ms(call, repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    plain, flip = Analyzer(tta=()), Analyzer(tta=("flip",))
    print(f"runtime: {type(plain.runtime).__name__}; {os.cpu_count()} CPUs")
    for name in PHOTOS:
        path = DEMO / name
        if not path.is_file():
            print(f"{name}: missing, skipped")
            continue
        image = load_image(path)
        chips = plain.chips(image, plain.detect(image))
        faces = len(chips)
        network = {label: median_ms(lambda a=analyzer: a.predict_chips(chips), args.repeats) for label, analyzer in (("plain", plain), ("flip", flip))}
        whole = {label: median_ms(lambda a=analyzer: a.analyze(image), max(3, args.repeats // 3)) for label, analyzer in (("plain", plain), ("flip", flip))}
        print(
            f"{name}: {faces} faces; network {network['plain'] / faces:.1f} -> {network['flip'] / faces:.1f} ms a face "
            f"(+{(network['flip'] - network['plain']) / faces:.1f}); analyze {whole['plain']:.0f} -> {whole['flip']:.0f} ms a photo"
        )


if __name__ == "__main__":
    main()
