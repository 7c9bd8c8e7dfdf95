"""What `howold analyze` and `howold demo` do, kept apart from argument parsing.

`analyze_paths` and `analyze_to_jsonl` exit codes: 0 when every image was analysed, 1 when
any input failed (unreadable, corrupt, missing) or there was nothing to analyse; the images
that could be read are still annotated and reported. `analyze_to_jsonl` also gives 1 when
the results file cannot be written (a full disk, a read-only folder, not a regular file),
and 143 when SIGTERM stopped it. (2 is the CLI's code for a usage or setup error.)
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO

import numpy as np
from PIL import Image

from .drawing import draw_faces
from .errors import HowoldError
from .images import is_image_path, load_image
from .results import RESUME, ResultsFileError, ResultsWriter, check_results_path, completed_sources, write_failure

#: Inputs with these suffixes keep a lossless annotated copy (.png); others get .jpg.
LOSSLESS_SUFFIXES = {".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


class Stopped(BaseException):
    """A termination signal (SIGTERM) asked the run to stop; raised by the handler that
    `stop_on_sigterm` installs. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` that keeps a run going on a bad file swallows it."""

    def __init__(self, signal_number: int):
        import signal

        super().__init__(signal.Signals(signal_number).name)
        self.signal = signal_number


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (what schedulers and container runtimes send) raises
    `Stopped`, so that a run ends cleanly: its results file whole, and one line saying how
    to resume. The previous handler comes back after (only the main thread can set one)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signal_number, frame):
        raise Stopped(signal_number)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(message: str, stream: TextIO | None = None) -> None:
    print(f"howold: {message}", file=stream or sys.stderr, flush=True)


def _problem(path: Path, error: BaseException) -> str:
    """'<file>: <problem>', without naming the file twice."""
    message = str(error).strip() or type(error).__name__
    if not isinstance(error, HowoldError):
        message = f"unexpected {type(error).__name__}: {message}"
    message = " ".join(message.splitlines())
    return message if message.startswith(f"{path}:") else f"{path}: {message}"


def expand_inputs(inputs: Iterable[str | Path], recursive: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to analyse and (path, reason) pairs skipped.

    Files named directly are always tried; a folder contributes its image files (by
    suffix, sorted by name), and with `recursive` those of its subfolders, depth first,
    each as the folder given joined with its path below it; other files (and, without
    `recursive`, subfolders) are skipped. A path that does not exist is kept, so that it
    is reported as a failure.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()  # folders already searched: a linked folder loop ends

    def search(folder: Path) -> None:
        seen.add(folder.resolve())
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            if child.is_dir():
                if not recursive:
                    skipped.append((child, "skipped, a folder (give --recursive to look into subfolders)"))
                elif child.resolve() in seen:
                    skipped.append((child, "skipped, a folder already searched (a link loop)"))
                else:
                    search(child)
            elif is_image_path(child):
                files.append(child)
            else:
                skipped.append((child, f"skipped, not an image file by its suffix ({child.suffix or 'none'})"))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            search(path)
        else:
            files.append(path)
    return files, skipped


def annotated_name(path: Path, used: set[str]) -> str:
    """Output file name for an input: same stem, .png for lossless inputs else .jpg, unique."""
    suffix = ".png" if path.suffix.lower() in LOSSLESS_SUFFIXES else ".jpg"
    name, number = f"{path.stem}{suffix}", 2
    while name in used:
        name, number = f"{path.stem}_{number}{suffix}", number + 1
    used.add(name)
    return name


def save_image(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=92)
    else:
        image.save(path)
    return path


def _write_json(results, json_path: str | Path | None) -> None:
    text = json.dumps(results, indent=2)
    if json_path is None:
        print(text, flush=True)
        return
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(text + "\n", encoding="utf-8")


def analyze_paths(
    analyzer, inputs: Iterable[str | Path], output_dir: str | Path | None, json_path: str | Path | None = None, crop: bool = False, recursive: bool = False
) -> int:
    """Analyse image files and folders (`recursive`: their subfolders too); annotated copies
    go to `output_dir` (None: none). `crop`: each image is one face (see `Analyzer.analyze`).

    Each failure prints one line "howold: <file>: <problem>" to stderr and the run goes
    on. The JSON (a list of {"source", "faces"} or {"source", "error"}) goes to
    `json_path`, or to stdout. Returns 0 if every image was analysed, else 1.
    """
    from tqdm import tqdm

    files, skipped = expand_inputs(inputs, recursive)
    for path, reason in skipped:
        _say(f"{path}: {reason}")
    output = Path(output_dir) if output_dir is not None else None
    results, used, failed = [], set(), 0
    bar = tqdm(files, unit="image", leave=False, disable=len(files) < 2 or not sys.stderr.isatty())
    for path in bar:
        entry: dict = {"source": str(path)}
        try:
            image = load_image(path)
            faces = analyzer.analyze(image, crop=crop)
            entry["faces"] = faces
            if output is not None:
                saved = save_image(draw_faces(image, faces), output / annotated_name(path, used))
                entry["annotated"] = str(saved)
        except Exception as error:  # noqa: BLE001 - one bad file must not end the run
            failed += 1
            entry.pop("faces", None)
            entry["error"] = _problem(path, error)
            bar.clear()
            _say(entry["error"])
        results.append(entry)
    bar.close()
    _write_json(results, json_path)
    if not files:
        _say("no images to analyse")
        return 1
    faces = sum(len(r.get("faces", [])) for r in results)
    where = f"; annotated images in {output}" if output is not None and len(files) > failed else ""
    _say(f"{len(files) - failed} of {len(files)} images analysed, {faces} faces{where}" + (f"; {len(skipped)} skipped" if skipped else ""))
    return 0 if failed == 0 else 1


def analyze_to_jsonl(
    engine,
    analyzer_options: Mapping[str, Any],
    inputs: Iterable[str | Path],
    output: str | Path,
    batch_size: int = 32,
    output_dir: str | Path | None = None,
    crop: bool = False,
    recursive: bool = False,
) -> int:
    """Analyse image files and folders with `engine`, appending one JSON line per image to
    `output` as results come; sources already in `output` are skipped (resume). `recursive`:
    subfolders too.

    With `output_dir`, annotated copies are written too (each image is read a second
    time). `crop`: each image is one face. Ends with a summary line: images, faces, errors,
    images/s.

    Each batch's lines are written whole or not at all. A results path that is not a
    regular file is refused before any work; a write that fails (a full disk, a read-only
    folder) ends the run with one line saying how many results are safe in the file (exit
    1); SIGTERM (`Stopped`) ends it with one line saying how to resume (exit 143).
    """
    from tqdm import tqdm

    try:
        check_results_path(output)
    except ResultsFileError as error:
        _say(f"error: {error}")
        return 1
    files, skipped = expand_inputs(inputs, recursive)
    for path, reason in skipped:
        _say(f"{path}: {reason}")
    if not files:
        _say("no images to analyse")
        return 1
    writer: ResultsWriter | None = None
    try:
        done = completed_sources(output)
        sources = list(dict.fromkeys(str(path) for path in files))  # each once, even if named twice
        todo = [source for source in sources if source not in done]
        annotated_dir = Path(output_dir) if output_dir is not None else None
        used = {Path(entry["annotated"]).name for entry in done.values() if "annotated" in entry}
        images = faces = errors = 0
        started = time.perf_counter()
        interactive = sys.stderr.isatty()
        writer = ResultsWriter(output, existing=len(done))
        bar = tqdm(total=len(todo), unit="image", dynamic_ncols=True, mininterval=0.1 if interactive else 5.0, disable=not todo)
        with writer, bar:
            for batch in engine.run_batches(todo, analyzer_options, batch_size, crop) if todo else ():
                for result in batch:
                    if "error" in result:
                        errors += 1
                        bar.write(f"howold: {_problem(Path(result['source']), HowoldError(result['error']))}", file=sys.stderr)
                    else:
                        faces += len(result["faces"])
                        if annotated_dir is not None:
                            result["annotated"] = str(_save_annotated(result, annotated_dir, used, output, writer.saved))
                writer.write_many(batch)
                images += len(batch)
                bar.update(len(batch))
    except ResultsFileError as error:
        _say(f"error: {error}")
        return 1
    except Stopped as stop:
        saved = writer.saved if writer is not None else 0
        _say(f"stopped by {stop}; {saved} result{'s' if saved != 1 else ''} safely in {output}; {RESUME}")
        return 128 + stop.signal
    seconds = time.perf_counter() - started
    before = f" ({len(sources) - len(todo)} already in {output})" if len(todo) < len(sources) else ""
    _say(f"{images} images{before}, {faces} faces, {errors} errors, {images / seconds:.1f} images/s; results in {output}" + (f"; {len(skipped)} skipped" if skipped else ""))
    return 0 if errors == 0 else 1


def _save_annotated(result: dict, folder: Path, used: set[str], output: str | Path, saved: int) -> Path:
    path = Path(result["source"])
    target = folder / annotated_name(path, used)
    try:
        return save_image(draw_faces(load_image(path), result["faces"]), target)
    except OSError as error:
        raise write_failure(f"the annotated image {target}", error, output, saved) from None


DEMO_IMAGE = Path(__file__).parent / "assets" / "astronaut.png"


def demo_image() -> np.ndarray:
    """The bundled demo photo: scikit-image's astronaut (Eileen Collins, NASA, public domain),
    the same file, shipped with howold so that the demo needs no scikit-image."""
    with Image.open(DEMO_IMAGE) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")), dtype=np.uint8)


def run_demo(analyzer, output_dir: str | Path) -> int:
    """Analyse the bundled astronaut photo, write astronaut_howold.jpg, print the JSON."""
    image = demo_image()
    faces = analyzer.analyze(image)
    path = save_image(draw_faces(image, faces), Path(output_dir) / "astronaut_howold.jpg")
    print(json.dumps({"source": "skimage.data.astronaut", "faces": faces, "annotated": str(path)}, indent=2), flush=True)
    _say(f"{len(faces)} face(s); annotated image written to {path}")
    return 0
