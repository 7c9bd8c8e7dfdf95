"""Backbone features of a dataset, computed once and cached on disk.

The backbone is frozen, so its features depend only on the backbone, its weights, the
preprocessing, the images and the augmentation. Those make the cache key. Features are
written in chunks as they are computed, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .alignment import Aligner, crop_box
from .backbones import Backbone
from .data import Dataset
from .images import load_image
from .paths import feature_cache_dir


@dataclass(frozen=True)
class AugmentConfig:
    """Views stored per image: 0 plain, 1 mirrored, the rest random (flip, shift, erasing)."""

    views: int = 4
    max_shift: float = 0.06  # of the chip side
    max_scale: float = 0.06
    erasing_probability: float = 0.5
    erasing_area: tuple[float, float] = (0.02, 0.15)
    seed: int = 0


def augment_chip(chip: np.ndarray, view: int, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The `view`-th view of an aligned chip; views 0 and 1 are deterministic."""
    if view == 0:
        return chip
    if view == 1:
        return np.ascontiguousarray(chip[:, ::-1])
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
    return np.ascontiguousarray(chip)


def cache_key(backbone: Backbone, dataset: Dataset, augment: AugmentConfig, layer: str | None = None) -> str:
    description = {
        "backbone": backbone.describe(),
        "augment": asdict(augment),
        "images": [(face.path.name, face.path.stat().st_size) for face in dataset.faces],
        "version": 1,
    }
    if layer is not None:  # features (layer None) keep the keys they always had
        description["layer"] = layer
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]


def cache_folder(backbone: Backbone, dataset: Dataset, augment: AugmentConfig, layer: str | None = None, cache_root: Path | None = None) -> Path:
    """Where the cached features (layer None) or activations at `layer` live."""
    name = backbone.name if layer is None else f"{backbone.name}-{layer}"
    return (cache_root or feature_cache_dir()) / f"{name}-{cache_key(backbone, dataset, augment, layer)}"


def dataset_views(dataset: Dataset, indices: range, backbone: Backbone, aligner: Aligner, augment: AugmentConfig) -> np.ndarray:
    """Chips (len(indices) * views, size, size, 3) for a chunk of the dataset, crop-aligned."""
    chips = []
    for index in indices:
        image = load_image(dataset.faces[index].path)
        chip = aligner.chips(image, [crop_box(image)], backbone.chip)[0]
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
) -> np.ndarray:
    """Features (N, views, D) float16 for every image, from the cache where it has them."""
    return extract_activations(backbone, dataset, (None,), augment, cache_root, chunk_size, batch_size, progress)[None]


def extract_activations(
    backbone: Backbone,
    dataset: Dataset,
    layers: tuple[str | None, ...],
    augment: AugmentConfig = AugmentConfig(),
    cache_root: Path | None = None,
    chunk_size: int = 256,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str | None, np.ndarray]:
    """Activations (N, views, *shape) float16 at each of `layers` (None: the features).

    Layers other than None need a KerasBackbone. One pass over the images fills every
    layer's cache, so the boundaries of a whole unfreezing schedule cost one extraction.
    """
    folders = {layer: cache_folder(backbone, dataset, augment, layer, cache_root) for layer in layers}
    covered = np.ones(len(dataset), bool)
    for layer, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**backbone.describe(), "layer": layer, "augment": asdict(augment), "images": len(dataset)}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
        mine = np.zeros(len(dataset), bool)
        for chunk in _cached_chunks(folder):
            mine[chunk.start : chunk.stop] = True
        covered &= mine
    missing = _missing_chunks(covered, chunk_size)
    if missing:
        aligner = Aligner()
        what = ", ".join("features" if layer is None else layer for layer in layers)
        bar = tqdm(total=len(dataset), initial=int(covered.sum()), desc=f"{backbone.name} {what}", unit="img", disable=not progress)
        # Read and align the next chunk in a thread while the backbone runs on this one.
        ready: queue.Queue = queue.Queue(maxsize=2)

        def produce() -> None:
            for chunk in missing:
                try:
                    ready.put((chunk, dataset_views(dataset, chunk, backbone, aligner, augment)))
                except Exception as error:  # handed to the main thread, which raises it
                    ready.put((chunk, error))
                    return

        threading.Thread(target=produce, daemon=True).start()
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
                _save_atomic(_chunk_path(folders[layer], chunk), value.astype(np.float16))
            bar.update(len(chunk))
        bar.close()
    results = {}
    for layer, folder in folders.items():
        shape = (backbone.feature_size,) if layer is None else backbone.layer_shape(layer)
        result = np.zeros((len(dataset), augment.views) + shape, np.float16)
        for chunk in _cached_chunks(folder):
            result[chunk.start : chunk.stop] = np.load(_chunk_path(folder, chunk))
        results[layer] = result
    return results


def _cached_chunks(folder: Path) -> list[range]:
    """The index ranges already on disk, whatever chunk size wrote them."""
    chunks = []
    for path in folder.glob("chunk_*_*.npy"):
        start, stop = path.stem.split("_")[1:3]
        chunks.append(range(int(start), int(stop)))
    return sorted(chunks, key=lambda chunk: chunk.start)


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


def _save_atomic(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        np.save(handle, array)
    temporary.replace(path)
