"""How long `howold report` takes on a big results file: `--faces` made-up faces (one per image,
in `--folders` folders) with the fields and sizes `howold analyze --output` writes and the
shipped model's identity, reported with --by folder into JSON and a page.

    python benchmarks/bench_report.py [--faces 10000] [--folders 10] [--repeats 3]

Prints the file's size and the median wall time of the whole command (reading, the corrected
shares with their intervals for every attribute, overall and per folder, and writing both files).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face.data import FAIRFACE_RACES, RACE_SETS, RACES  # noqa: E402
from face.model import read_heads  # noqa: E402
from face.model_files import default_heads_path, heads_id  # noqa: E402
from face.quantification import encode_distribution  # noqa: E402
from face.report import write_report  # noqa: E402


def results_lines(faces: int, folders: int, model: str, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    years = np.arange(101)
    for index in range(faces):
        age = float(np.clip(rng.gamma(4, 8), 1, 95))
        spread = 3 + age / 8
        distribution = np.exp(-0.5 * ((years - age) / spread) ** 2)
        distribution /= distribution.sum()
        female = float(rng.beta(0.6, 0.6))
        race7 = rng.dirichlet(np.full(7, 0.4))
        race5 = [float(sum(race7[i] for i in members)) for members in RACE_SETS]
        face = {
            "box": [10, 10, 90, 100], "detection_confidence": round(float(rng.uniform(0.6, 1)), 4),
            "age": round(age, 1), "age_interval": [round(age - spread, 1), round(age + spread, 1)], "age_group": "25-32", "age_group_confidence": 0.5,
            "gender": "female" if female >= 0.5 else "male", "gender_confidence": round(max(female, 1 - female), 4),
            "race": RACES[int(np.argmax(race5))], "race_confidences": {n: round(p, 4) for n, p in zip(RACES, race5)},
            "age_distribution": encode_distribution(distribution),
            "race_fairface": FAIRFACE_RACES[int(race7.argmax())], "race_fairface_confidences": {n: round(float(p), 4) for n, p in zip(FAIRFACE_RACES, race7)},
        }
        lines.append(json.dumps({"source": f"archive/{1990 + index % folders}/photo_{index:05d}.jpg", "model": model, "faces": [face]}))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=10000)
    parser.add_argument("--folders", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from face.backbones import DEFAULT_BACKBONE, create_backbone

    model = heads_id(read_heads(default_heads_path(create_backbone(DEFAULT_BACKBONE))))
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results.jsonl"
        results.write_text(results_lines(args.faces, args.folders, model))
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            write_report(results, html=Path(folder) / "report.html", json_path=Path(folder) / "summary.json", by="folder")
            times.append(time.perf_counter() - started)
        print(f"{args.faces} results ({results.stat().st_size / 1e6:.1f} MB), {args.folders} folders: report in {statistics.median(times):.2f} s (median of {args.repeats}; all: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
