"""Backbone features of a dataset, computed once and cached on disk.

The backbone is frozen, so its features depend only on the backbone, its weights, the
preprocessing, the images and the augmentation (and, for datasets of loose crops, the
detector that finds the face). Those make the cache key. Features are written in chunks as
they are computed, so a killed run resumes where it stopped, and read back memory-mapped
(`StackedArrays`), so training on tens of thousands of images x views does not load them whole.
A chunk is written whole or not at all (atomic.py), and one whose file does not hold all its
rows (cut short outside howold, say by a copy to a full disk) is computed again, never read.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .alignment import Aligner, crop_box
from .atomic import save_array, write_text
from .backbones import Backbone
from .crops import loose_crop_face
from .data import DATASETS, Dataset
from .detectors import DEFAULT_DETECTOR
from .errors import ConfigError
from .images import load_image
from .paths import feature_cache_dir


@dataclass(frozen=True)
class AugmentConfig:
    """Views stored per image: 0 plain, 1 mirrored, the rest random (flip, shift, erasing).

    Low resolution: faces in group photos are often 40-80 px wide, where wrinkles and skin
    texture are gone; the last `low_resolution_views` random views are shrunk to a chip side
    drawn from `low_resolution_sides` and scaled back up (the face is about two thirds of the
    chip side), so training sees them. `resolution` shrinks every view to one side, for
    measuring a model on small faces.
    """

    views: int = 4
    max_shift: float = 0.06  # of the chip side
    max_scale: float = 0.06
    erasing_probability: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.15)
    seed: int = 0
    low_resolution_views: int = 0
    low_resolution_sides: tuple[int, int] = (32, 112)
    resolution: int | None = None

    def __post_init__(self) -> None:
        if self.low_resolution_views and not 0 < self.low_resolution_views <= self.views - 2:
            random_views = max(self.views - 2, 0)
            raise ConfigError(f"low_resolution_views ({self.low_resolution_views}) must be 0 to the number of random views, {random_views} of views={self.views} (views 0 and 1 are plain and mirrored)")
        low, high = self.low_resolution_sides
        if not 8 <= low <= high:
            raise ConfigError(f"low_resolution_sides must be (low, high) with 8 <= low <= high; got {self.low_resolution_sides}")
        if self.resolution is not None and self.resolution < 8:
            raise ConfigError(f"resolution (the chip side to shrink to) must be at least 8 px; got {self.resolution}")

    @classmethod
    def from_dict(cls, settings: dict) -> "AugmentConfig":
        """The config a sidecar recorded (`training.augment`): JSON's lists back to tuples, so
        that the cache keys are those of the training run."""
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in settings.items()})

    def key(self) -> dict:
        """What the views depend on; the low-resolution fields only where set, so that caches
        made before them keep their keys."""
        defaults = AugmentConfig.__dataclass_fields__
        return {
            name: value
            for name, value in asdict(self).items()
            if name not in _LOW_RESOLUTION_FIELDS or value != defaults[name].default or self.low_resolution_views
        }


_LOW_RESOLUTION_FIELDS = ("low_resolution_views", "low_resolution_sides", "resolution")


def shrink(chip: np.ndarray, side: int) -> np.ndarray:
    """The chip as a camera would give a face that small: shrunk to `side`, scaled back up."""
    size = chip.shape[0]
    small = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR))


def augment_chip(chip: np.ndarray, view: int, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The `view`-th view of an aligned chip; views 0 and 1 are deterministic."""
    if view < 2:
        chip = chip if view == 0 else np.ascontiguousarray(chip[:, ::-1])
        return chip if config.resolution is None else shrink(chip, config.resolution)
    size = chip.shape[0]
    if rng.random() < 0.5:
        chip = chip[:, ::-1]
    scale = 1.0 + rng.uniform(-config.max_scale, config.max_scale)
    shift = rng.uniform(-config.max_shift, config.max_shift, size=2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 0.0, scale)
    matrix[:, 2] += shift
    chip = cv2.warpAffine(np.ascontiguousarray(chip), matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < config.erasing_probability:
        area = rng.uniform(*config.erasing_area) * size * size
        aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
        height = int(min(size, np.sqrt(area * aspect)))
        width = int(min(size, np.sqrt(area / aspect)))
        top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
        chip = chip.copy()
        chip[top : top + height, left : left + width] = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if view >= config.views - config.low_resolution_views:
        chip = shrink(chip, int(rng.integers(config.low_resolution_sides[0], config.low_resolution_sides[1] + 1)))
    if config.resolution is not None:
        chip = shrink(chip, config.resolution)
    return np.ascontiguousarray(chip)


def _images_description(dataset: Dataset, detector: str) -> dict:
    """What identifies a dataset's images; UTKFace's keeps the description its caches always had."""
    description: dict = {"images": [(face.path.name, face.path.stat().st_size) for face in dataset.faces]}
    if dataset.kind != "utkface":  # other datasets' names ("1.jpg") never share a key with UTKFace's
        description["dataset"] = dataset.kind
    if dataset.loose_crops:
        description["boxes"] = {"detector": detector, "margin": DATASETS[dataset.kind].margin, "landmarks": True}
    return description


def cache_key(backbone: Backbone, dataset: Dataset, augment: AugmentConfig, layer: str | None = None, detector: str = DEFAULT_DETECTOR) -> str:
    description = {"backbone": backbone.describe(), "augment": augment.key(), **_images_description(dataset, detector), "version": 1}
    if layer is not None:  # features (layer None) keep the keys they always had
        description["layer"] = layer
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]


def cache_folder(backbone: Backbone, dataset: Dataset, augment: AugmentConfig, layer: str | None = None, cache_root: Path | None = None, detector: str = DEFAULT_DETECTOR) -> Path:
    """Where the cached features (layer None) or activations at `layer` live."""
    name = backbone.name if layer is None else f"{backbone.name}-{layer}"
    prefix = "" if dataset.kind == "utkface" else f"{dataset.kind}-"
    return (cache_root or feature_cache_dir()) / f"{prefix}{name}-{cache_key(backbone, dataset, augment, layer, detector)}"


def cache_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("chunk_*.npy"))


def dataset_boxes(dataset: Dataset, detector: str = DEFAULT_DETECTOR, cache_root: Path | None = None, chunk_size: int = 1000, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face boxes (N, 4), whether the detector found them (N,) and its five landmarks (N, 5, 2;
    NaN where it gave none) for every image, cached.

    Aligned crops are their own box (all "found", no landmarks); loose crops are detected (see crops.py).
    """
    if not dataset.loose_crops:
        return np.zeros((len(dataset), 4), np.int32), np.ones(len(dataset), bool), np.full((len(dataset), 5, 2), np.nan, np.float32)
    from .detection import FaceDetector

    key = hashlib.sha256(json.dumps(_images_description(dataset, detector), sort_keys=True).encode()).hexdigest()[:20]
    folder = (cache_root or feature_cache_dir()) / f"{dataset.kind}-boxes-{detector}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    covered = np.zeros(len(dataset), bool)
    for chunk in _cached_chunks(folder):
        covered[chunk.start : chunk.stop] = True
    missing = _missing_chunks(covered, chunk_size)
    if missing:
        finder = FaceDetector(detector)
        margin = DATASETS[dataset.kind].margin
        # closed when a write fails too, so that the error starts a line of its own
        with tqdm(total=len(dataset), initial=int(covered.sum()), desc=f"{dataset.kind} faces ({detector})", unit="img", disable=not progress) as bar:
            for chunk in missing:
                rows = []
                for index in chunk:
                    box, landmarks, found = loose_crop_face(load_image(dataset.faces[index].path), finder, margin)
                    points = np.full(10, np.nan) if landmarks is None else np.asarray(landmarks, np.float64).reshape(10)
                    rows.append((*box, float(found), *points))
                    bar.update(1)
                save_array(_chunk_path(folder, chunk), np.array(rows, np.float32))
    table = np.concatenate([np.load(_chunk_path(folder, chunk)) for chunk in _cached_chunks(folder)])
    return table[:, :4].astype(np.int32), table[:, 4].astype(bool), table[:, 5:15].reshape(-1, 5, 2)


def dataset_views(
    dataset: Dataset, indices: range, backbone: Backbone, aligner: Aligner, augment: AugmentConfig, boxes: np.ndarray | None = None, landmarks: np.ndarray | None = None
) -> np.ndarray:
    """Chips (len(indices) * views, size, size, 3) for a chunk of the dataset, aligned in the face
    box (`boxes`, from dataset_boxes; None: the whole image, for aligned crops): on the
    detector's `landmarks` where it gave them, as the Analyzer aligns, else by dlib's in the box."""
    chips = []
    for index in indices:
        image = load_image(dataset.faces[index].path)
        box = crop_box(image) if boxes is None else tuple(int(v) for v in boxes[index])
        points = None if landmarks is None or np.isnan(landmarks[index]).any() else landmarks[index]
        chip = aligner.chips(image, [box], backbone.chip, [points])[0]
        rng = np.random.default_rng([augment.seed, index])
        chips.extend(augment_chip(chip, view, augment, rng) for view in range(augment.views))
    return np.stack(chips)


def extract_features(
    backbone: Backbone,
    dataset: Dataset,
    augment: AugmentConfig = AugmentConfig(),
    cache_root: Path | None = None,
    chunk_size: int = 256,
    batch_size: int = 32,
    progress: bool = True,
    detector: str = DEFAULT_DETECTOR,
) -> "StackedArrays":
    """Features (N, views, D) float16 for every image, from the cache where it has them."""
    return extract_activations(backbone, dataset, (None,), augment, cache_root, chunk_size, batch_size, progress, detector)[None]


def extract_activations(
    backbone: Backbone,
    dataset: Dataset,
    layers: tuple[str | None, ...],
    augment: AugmentConfig = AugmentConfig(),
    cache_root: Path | None = None,
    chunk_size: int = 256,
    batch_size: int = 32,
    progress: bool = True,
    detector: str = DEFAULT_DETECTOR,
) -> dict[str | None, "StackedArrays"]:
    """Activations (N, views, *shape) float16 at each of `layers` (None: the features), memory-mapped.

    Layers other than None need a KerasBackbone. One pass over the images fills every
    layer's cache, so the boundaries of a whole unfreezing schedule cost one extraction.
    Loose crops are aligned on the faces `detector` finds (dataset_boxes).
    """
    folders = {layer: cache_folder(backbone, dataset, augment, layer, cache_root, detector) for layer in layers}
    covered = np.ones(len(dataset), bool)
    for layer, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**backbone.describe(), "layer": layer, "augment": augment.key(), "images": len(dataset)}
        write_text(folder / "meta.json", json.dumps(meta, indent=2))
        mine = np.zeros(len(dataset), bool)
        for chunk in _cached_chunks(folder):
            mine[chunk.start : chunk.stop] = True
        covered &= mine
    missing = _missing_chunks(covered, chunk_size)
    if missing:
        boxes, _, landmarks = dataset_boxes(dataset, detector, cache_root, progress=progress) if dataset.loose_crops else (None, None, None)
        aligner = Aligner()
        what = ", ".join("features" if layer is None else layer for layer in layers)
        bar = tqdm(total=len(dataset), initial=int(covered.sum()), desc=f"{backbone.name} {what}", unit="img", disable=not progress)
        # Read and align the next chunk in a thread while the backbone runs on this one.
        ready: queue.Queue = queue.Queue(maxsize=2)

        def produce() -> None:
            for chunk in missing:
                try:
                    ready.put((chunk, dataset_views(dataset, chunk, backbone, aligner, augment, boxes, landmarks)))
                except Exception as error:  # handed to the main thread, which raises it
                    ready.put((chunk, error))
                    return

        threading.Thread(target=produce, daemon=True).start()
        with bar:  # closed when a write fails too, so that the error starts a line of its own
            for _ in missing:
                chunk, chips = ready.get()
                if isinstance(chips, Exception):
                    raise chips
                if layers == (None,):
                    values = {None: backbone.embed(chips, batch_size=batch_size)}
                else:
                    values = backbone.activations(chips, layers, batch_size=batch_size)
                for layer, value in values.items():
                    value = value.reshape((len(chunk), augment.views) + value.shape[1:])
                    save_array(_chunk_path(folders[layer], chunk), value.astype(np.float16))
                bar.update(len(chunk))
    results = {}
    for layer, folder in folders.items():
        shape = (backbone.feature_size,) if layer is None else backbone.layer_shape(layer)
        results[layer] = StackedArrays([np.load(_chunk_path(folder, chunk), mmap_mode="r") for chunk in _cached_chunks(folder)], (augment.views,) + shape)
    return results


class StackedArrays:
    """Arrays stacked along their first axis without copying them (memory-mapped cache chunks,
    or the caches of several datasets): `x[rows, ...]` reads just those rows.

    Indexing takes rows first (an int, slice, or index array), then anything numpy takes for
    the other axes; an index array on the second axis pairs with the rows, as in numpy.
    """

    def __init__(self, parts, item_shape: tuple[int, ...] | None = None, dtype=np.float16):
        flat = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, StackedArrays) else [part])
        self.parts = [part for part in flat if len(part)]
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])
        self.item_shape = tuple(self.parts[0].shape[1:]) if self.parts else tuple(item_shape or ())
        self.dtype = self.parts[0].dtype if self.parts else np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.offsets[-1]),) + self.item_shape

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        scalar = isinstance(first, (int, np.integer))
        rows = np.atleast_1d(np.arange(len(self))[first])
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        out = None
        for part in np.unique(part_of):
            mask = part_of == part
            local_rest = tuple(r[mask] if isinstance(r, np.ndarray) and r.ndim == 1 and len(r) == len(rows) else r for r in rest)
            values = np.asarray(self.parts[part][(rows[mask] - self.offsets[part],) + local_rest])
            if out is None:
                out = np.empty((len(rows),) + values.shape[1:], values.dtype)
            out[mask] = values
        if out is None:
            out = np.zeros((0,) + self.item_shape, self.dtype)[(slice(None),) + rest]
        return out[0] if scalar else out

    def release(self) -> None:
        """Drop the memory-mapped pages read so far from this process's memory (they stay in
        the page cache): reading every row of a cache bigger than the budget, epoch after
        epoch, would otherwise count all of it in the process's resident memory."""
        for part in self.parts:
            mapping = getattr(part, "_mmap", None)  # numpy.memmap's own mapping of the file
            if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
                mapping.madvise(mmap.MADV_DONTNEED)

    def __array__(self, dtype=None, copy=None):
        values = self[:]
        return values if dtype is None else values.astype(dtype)


def _cached_chunks(folder: Path) -> list[range]:
    """The index ranges already on disk, whatever chunk size wrote them; chunk files that do
    not hold all their rows are deleted, so they are computed again."""
    chunks = []
    for path in folder.glob("chunk_*_*.npy"):
        start, stop = path.stem.split("_")[1:3]
        chunk = range(int(start), int(stop))
        if _complete(path, len(chunk)):
            chunks.append(chunk)
        else:
            path.unlink(missing_ok=True)
    return sorted(chunks, key=lambda chunk: chunk.start)


def _complete(path: Path, rows: int) -> bool:
    """Whether a .npy file holds `rows` rows in full: its header parses, says so, and the data
    after it is as long as the header's shape and dtype make it."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            data_start = handle.tell()
        size = path.stat().st_size
    except (OSError, ValueError, SyntaxError):
        return False
    return bool(shape) and shape[0] == rows and size == data_start + int(np.prod(shape)) * dtype.itemsize


def _missing_chunks(covered: np.ndarray, chunk_size: int) -> list[range]:
    chunks, start = [], None
    for index in range(len(covered) + 1):
        gap = index < len(covered) and not covered[index]
        if gap and start is None:
            start = index
        if start is not None and (not gap or index - start == chunk_size):
            chunks.append(range(start, index))
            start = index if gap else None
    return chunks


def _chunk_path(folder: Path, chunk: range) -> Path:
    return folder / f"chunk_{chunk.start:07d}_{chunk.stop:07d}.npy"
