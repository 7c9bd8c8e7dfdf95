"""The main job: every face in an image, with age, gender and race.

One Analyzer loads the detector, aligner, backbone and heads once. Calls are serialised
by a lock, so one instance may be shared between threads (a web server's, say).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .alignment import Aligner, crop_box
from .backbones import DEFAULT_BACKBONE, Backbone, create_backbone
from .backbones.base import KerasBackbone
from .detection import DEFAULT_DETECTOR, DEFAULT_MAX_SIDE, Detection, FaceDetector, box_area, clip_box
from .errors import ConfigError, ExportError, HowoldError, WeightsError
from .images import ImageInput, describe, load_image
from .model import TrainedHeads, read_heads
from .model_files import default_heads_path, heads_id, onnx_export_of
from .readout import AgeReadout, interpret
from .runtimes import DEFAULT_RUNTIME, Runtime, create_runtime

TTA_OPTIONS = ("flip", "oversample")
#: each face is averaged with its mirror image unless told otherwise: one more pass through the
#: network a face (benchmarks/bench_flip.py), steadier answers, and the views every documented figure uses
DEFAULT_TTA = ("flip",)
#: "landmarks": chips from the detector's own landmarks where it gives them (YuNet), else
#: dlib's; "dlib": always dlib's 5-point shape predictor (benchmarks/bench_alignment.py).
ALIGNMENTS = ("landmarks", "dlib")
#: In place of a list of boxes: the image is one face (see `Analyzer.analyze`).
CROP = "crop"


def _model_choice(model, heads, backbone) -> tuple:
    """(heads, backbone) for the Analyzer: `model`'s (face.catalogue), checked against the
    `heads` and `backbone` given with it; without a model, those given (default backbone)."""
    if model is None:
        return heads, DEFAULT_BACKBONE if backbone is None else backbone
    from .catalogue import resolve_model

    path, backbone_name = resolve_model(model)
    if heads is not None and Path(heads).resolve() != path.resolve():
        raise ConfigError(f"model {str(model)!r} is {path}, not the heads {heads}; give the model or the heads, not both")
    given = backbone if backbone is None or isinstance(backbone, str) else backbone.name
    if given is not None and given != backbone_name:
        raise ConfigError(f"model {str(model)!r} was trained on backbone {backbone_name!r}, not {given!r}; leave the backbone out")
    return path, backbone_name if backbone is None else backbone


def oversample(chips: np.ndarray, size: int) -> np.ndarray:
    """Four corners and the centre of each (bigger) chip, as in seed 000: (N*5, size, size, 3)."""
    big = chips.shape[1]
    offset = big - size
    middle = offset // 2
    corners = [(0, 0), (0, offset), (offset, 0), (offset, offset), (middle, middle)]
    return np.stack([chip[t : t + size, l : l + size] for chip in chips for t, l in corners])


class Analyzer:
    """Detects, aligns and analyses faces. `detector`: a name from `face.detectors`
    (yunet, hog, cnn); `tta`: any of "flip" and "oversample" (default flip; () for none); `runtime`: a name from
    `face.runtimes` (onnx, keras), by default onnx wherever the model has an exported ONNX
    file or translates to ONNX; with the exported file neither TensorFlow nor Keras loads.
    `age_readout`: how the age is read from its distribution (readout.AgeReadout.from_metadata:
    "default", the model's own; "raw", the mean of the distribution as the heads give it;
    or one the model's sidecar lists, e.g. "least-error"). `model`: a model's name in
    `face.catalogue` (`howold models`) or its `.keras` path: its heads and its backbone,
    so `heads` and `backbone` need not (and must not disagree if) given; without it, the
    backbone (default dlib-resnet-keras) and its shipped heads, or `heads`."""

    def __init__(
        self,
        backbone: str | Backbone | None = None,
        detector: str = DEFAULT_DETECTOR,
        heads: str | Path | None = None,
        upsample: int | None = None,
        tta: Sequence[str] = DEFAULT_TTA,
        max_detect_side: int = DEFAULT_MAX_SIDE,
        detection_threshold: float | None = None,
        alignment: str = "landmarks",
        runtime: str | None = None,
        age_readout: str = "default",
        model: str | Path | None = None,
    ):
        heads, backbone = _model_choice(model, heads, backbone)
        self.backbone = create_backbone(backbone) if isinstance(backbone, str) else backbone
        heads_path = Path(heads) if heads else default_heads_path(self.backbone)
        if not heads_path.is_file():
            raise WeightsError(f"{heads_path}: no trained heads for backbone {self.backbone.name!r}; train them with `howold train --backbone {self.backbone.name}`")
        self.heads: TrainedHeads = read_heads(heads_path)  # its Keras model loads only if a runtime needs it
        if runtime == "keras" or onnx_export_of(self.heads) is None:  # an exported graph holds the backbone itself
            self.heads.check_backbone(self.backbone, heads_path)
        self.age_readout: AgeReadout = AgeReadout.from_metadata(self.heads.metadata, age_readout)
        self.model_id = heads_id(self.heads)  # each results line says which model read its faces
        self.model_name = heads_path.stem  # its name in the catalogue (face.catalogue)
        unknown = set(tta) - set(TTA_OPTIONS)
        if unknown:
            raise ValueError(f"unknown test-time augmentation {sorted(unknown)}; choose from {TTA_OPTIONS}")
        self.tta = tuple(tta)
        self.detector = FaceDetector(detector, upsample=upsample, max_side=max_detect_side, threshold=detection_threshold)
        if alignment not in ALIGNMENTS:
            raise ValueError(f"unknown alignment {alignment!r}; choose from {ALIGNMENTS}")
        self.alignment = alignment
        self.aligner = Aligner()
        self.runtime: Runtime = _runtime_for(runtime, self.backbone, self.heads)
        self._lock = threading.Lock()

    # ---- steps, usable on their own ----------------------------------------------------

    def detect(self, image: np.ndarray) -> list[Detection]:
        return self.detector.detect(image)

    def chips(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """Aligned chips, from the detector's landmarks where it gives them (alignment
        "landmarks"), else from dlib's shape predictor inside the box."""
        spec = self.backbone.chip
        boxes = [d.box for d in detections]
        landmarks = [d.landmarks for d in detections] if self.alignment == "landmarks" else None
        if "oversample" in self.tta:
            from .backbones.base import ChipSpec

            # A chip 1.14x bigger at the same scale: dlib's chip spans (1 + 2 * padding) face
            # widths, so (1 + 2 * p') = 1.14 * (1 + 2 * p), i.e. p' = 1.14 * p + 0.07.
            big = round(spec.size * 1.14)
            return oversample(self.aligner.chips(image, boxes, ChipSpec(big, spec.padding * 1.14 + 0.07), landmarks), spec.size)
        return self.aligner.chips(image, boxes, spec, landmarks)

    def warm_up(self, batch_size: int = 32) -> None:
        """Prepare the runtime for every batch size it will see (Keras traces each, ~0.5 s),
        so that no request pays for a face count it has not met before; and run the
        detector at the usual photo sizes."""
        self.detector.warm_up()
        self.runtime.warm_up(batch_size)

    def predict_probabilities(self, chips: np.ndarray, per_face: int = 1, batch_size: int = 32) -> dict[str, np.ndarray]:
        """The heads' probabilities for chips, averaged over test-time views and over each
        face's `per_face` consecutive chips."""
        views = 2 if "flip" in self.tta else 1
        if views == 2:  # the mirrored chips go through in the same batches as the plain ones
            chips = np.concatenate([chips, chips[:, :, ::-1]])
        outputs = self.runtime.predict(np.ascontiguousarray(chips), batch_size)
        merged = {}
        for name, probabilities in outputs.items():
            probabilities = probabilities.reshape(views, -1, probabilities.shape[-1]).mean(axis=0)
            merged[name] = probabilities.reshape(-1, per_face, probabilities.shape[-1]).mean(axis=1)
        return merged

    def predict_chips(self, chips: np.ndarray, per_face: int = 1, batch_size: int = 32) -> list[dict]:
        """Answers for chips; `per_face` consecutive chips belong to one face and are averaged."""
        return interpret(self.predict_probabilities(chips, per_face, batch_size), self.age_readout)

    # ---- the API -------------------------------------------------------------------------

    def analyze(self, image: ImageInput, boxes: Iterable[Sequence[float]] | None = None, crop: bool = False) -> list[dict]:
        """One dict per face, largest first; [] when there is none: see `face.results_schema.FaceResult` for the fields.

        `boxes`: analyse these faces, no detection. `crop`: the image is one face (a face
        crop): the largest face the detector finds in it, else the whole image.
        """
        if crop and boxes is not None:
            raise ValueError("give boxes or crop=True, not both")
        return self._analyze_loaded([(load_image(image), CROP if crop else boxes)])[0]

    def analyze_many(self, images: Iterable[ImageInput], batch_size: int = 32, crop: bool = False) -> list[dict]:
        """{"source", "faces"} per image, or {"source", "error"} for one that failed."""
        return list(self.analyze_stream(images, batch_size, crop))

    def analyze_stream(self, sources: Iterable[ImageInput], batch_size: int = 32, crop: bool = False) -> Iterator[dict]:
        """{"source", "faces"} or {"source", "error"} per image, in order, as they are done.

        Memory stays bounded whatever the number of sources: `batch_size` images at a time
        are loaded, detected and aligned one by one (only their chips are kept), then their
        faces go through the network together (in batches of `batch_size` chips). `crop`:
        each image is one face, as in `analyze`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        chunk: list[ImageInput] = []
        for source in sources:
            chunk.append(source)
            if len(chunk) == batch_size:
                yield from self._analyze_chunk(chunk, batch_size, crop)
                chunk = []
        if chunk:
            yield from self._analyze_chunk(chunk, batch_size, crop)

    def _analyze_chunk(self, sources: list[ImageInput], batch_size: int, crop: bool) -> list[dict]:
        results = [{"source": describe(source), "model": self.model_id} for source in sources]

        def loaded():  # lazily, so that only one decoded image is held at a time
            for source, result in zip(sources, results):
                try:
                    yield load_image(source), CROP if crop else None
                except HowoldError as error:
                    result["error"] = str(error)
                    yield None, None

        for result, faces in zip(results, self._analyze_loaded(loaded(), batch_size, results)):
            if "error" not in result:
                result["faces"] = faces
        return results

    def _analyze_loaded(self, items: Iterable[tuple[np.ndarray | None, Iterable | None]], batch_size=32, results=None) -> list[list[dict]]:
        """Faces per (image, boxes) item; boxes None: detect; CROP: the image is one face. A None
        image (it failed to load) gets []. With `results`, an item's failure goes to
        results[i]["error"], else it raises."""
        with self._lock:
            per_image, sizes, all_chips, timings = [], [], [], {"detect_ms": 0.0, "predict_ms": 0.0}
            for number, (image, boxes) in enumerate(items):
                started = time.perf_counter()
                found, chips = [], None
                try:
                    if image is None:
                        pass  # it failed to load: results[number] says why
                    elif boxes is None:
                        found = self.detect(image)
                    elif boxes is CROP:
                        largest = max(self.detect(image), key=lambda d: box_area(d.box), default=None)
                        found = [largest or Detection(crop_box(image), None)]
                    else:
                        found = [Detection(tuple(int(round(v)) for v in box), None) for box in boxes]
                        _check_boxes(found, image)
                    chips = self.chips(image, found) if found else None
                except HowoldError as error:
                    if results is None:
                        raise
                    results[number]["error"] = str(error)
                    found, chips = [], None
                timings["detect_ms"] += (time.perf_counter() - started) * 1000
                per_image.append(found)
                sizes.append((0, 0) if image is None else image.shape[:2])
                if chips is not None:
                    all_chips.append(chips)
            started = time.perf_counter()
            per_face = 5 if "oversample" in self.tta else 1
            answers = self.predict_chips(np.concatenate(all_chips), per_face, batch_size) if all_chips else []
            timings["predict_ms"] += (time.perf_counter() - started) * 1000
            self.last_timings = {k: round(v, 2) for k, v in timings.items()}
        output, cursor = [], 0
        for (height, width), found in zip(sizes, per_image):
            faces = []
            for detection in found:
                confidence = detection.confidence
                face = {"box": list(clip_box(detection.box, width, height)), "detection_confidence": None if confidence is None else round(confidence, 4)}
                face.update(answers[cursor])
                cursor += 1
                faces.append(face)
            faces.sort(key=lambda f: box_area(f["box"]), reverse=True)
            output.append(faces)
        return output


def _runtime_for(name: str | None, backbone: Backbone, heads: TrainedHeads) -> Runtime:
    """The named runtime; None: onnx for a Keras backbone whose model translates, else keras."""
    if name is not None:
        return create_runtime(name, backbone, heads)
    if isinstance(backbone, KerasBackbone):
        try:
            return create_runtime(DEFAULT_RUNTIME, backbone, heads)
        except ExportError:
            pass  # a layer the ONNX translation does not know: TensorFlow runs it
    return create_runtime("keras", backbone, heads)


def _check_boxes(found, image: np.ndarray) -> None:
    height, width = image.shape[:2]
    for detection in found:
        box = detection.box
        if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
            raise HowoldError(f"box {list(box)}: want [left, top, right, bottom] with right > left and bottom > top")
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
            raise HowoldError(f"box {list(box)}: lies outside the {width}x{height} image")
