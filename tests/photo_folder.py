"""A made-up photo collection for the batch tests: variations of scikit-image's astronaut
(one face each) plus the awkward files a real folder holds."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: name -> what the file is; each must give an error line, or (blank, grey) be analysed.
AWKWARD = {
    "corrupt.jpg": "error",     # a JPEG header, then garbage
    "fake.jpg": "error",        # text with an image suffix
    "truncated.jpg": "error",   # the first half of a real JPEG
    "blank.png": "no face",
    "grey.png": "face",         # greyscale (mode L)
}
NOT_IMAGES = ["notes.txt", "results.csv"]  # skipped by their suffix, not in the results


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut(), dtype=np.uint8)


def make_photo_folder(folder: Path, good: int = 44, seed: int = 0) -> list[Path]:
    """`good` photos with one face (tinted, noisy, some mirrored, 300x300 around the face),
    the AWKWARD files and NOT_IMAGES; returns the paths of every image-suffixed file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = astronaut()[0:300, 80:380].astype(np.int16)  # the face is about 90 px wide
    paths = []
    for index in range(good):
        image = np.clip(base + rng.integers(-30, 30, size=3) + rng.integers(-8, 8, size=base.shape), 0, 255).astype(np.uint8)
        if index % 3 == 1:
            image = np.ascontiguousarray(image[:, ::-1])
        path = folder / f"photo_{index:03d}.{'png' if index % 4 == 0 else 'jpg'}"
        Image.fromarray(image).save(path)
        paths.append(path)
    jpeg = io.BytesIO()
    Image.fromarray(base.astype(np.uint8)).save(jpeg, format="JPEG")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
    (folder / "fake.jpg").write_text("this is not a photo\n")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(folder / "blank.png")
    Image.fromarray(base.astype(np.uint8)).convert("L").save(folder / "grey.png")
    for name in NOT_IMAGES:
        (folder / name).write_text("not an image\n")
    return sorted(paths + [folder / name for name in AWKWARD])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_results(got: list[dict], expected: list[dict], tolerance: float = 1e-4) -> None:
    """The same sources, each once, with equal errors, boxes and labels and numbers within `tolerance`."""
    by_source = {r["source"]: r for r in expected}
    assert sorted(r["source"] for r in got) == sorted(by_source), "not the same sources, each once"
    for result in got:
        assert_close(result, by_source[result["source"]], tolerance, result["source"])


def assert_close(a, b, tolerance: float, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: {sorted(a)} vs {sorted(b) if isinstance(b, dict) else b}"
        for key in a:
            assert_close(a[key], b[key], tolerance, f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: {a} vs {b}"
        for number, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, tolerance, f"{where}[{number}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= tolerance, f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def analyze_until_lines(folder: str, output: Path, lines: int, options: list[str], stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """`howold analyze FOLDER --output OUTPUT --batch-size 2` in its own process, returned once
    `lines` result lines are written (so that it can be stopped mid-run); killed if waiting fails."""
    command = [sys.executable, "-m", "face.cli", "analyze", folder, "--output", str(output), "--batch-size", "2", *options]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (output.exists() and output.read_bytes().count(b"\n") >= lines):
            assert process.poll() is None, f"the run ended before it wrote {lines} lines"
            assert time.monotonic() < deadline, "no results after 240 s"
            time.sleep(0.02)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process

