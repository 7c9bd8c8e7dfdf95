"""Faces in a video file or a camera, tracked across frames, with steady labels.

Faces are detected every `every` frames and matched to the tracks of earlier frames by
box overlap (IoU). Each track keeps an exponential moving average of the age and of the
gender and race confidences; its label is the argmax of the smoothed values, so it does
not flicker from frame to frame. Between detections the tracks keep their boxes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import GENDERS, RACES
from .drawing import draw_faces
from .errors import HowoldError

DEFAULT_FPS = 25.0


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [left, top, right, bottom] boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _gender_probabilities(face: dict) -> np.ndarray:
    probabilities = np.full(len(GENDERS), 1.0 / len(GENDERS))
    if face.get("gender") in GENDERS:
        confidence = float(face.get("gender_confidence", 1.0))
        index = GENDERS.index(face["gender"])
        probabilities[:] = (1.0 - confidence) / max(1, len(GENDERS) - 1)
        probabilities[index] = confidence
    return probabilities


def _race_probabilities(face: dict) -> np.ndarray:
    confidences = face.get("race_confidences")
    if confidences:
        return np.array([float(confidences.get(name, 0.0)) for name in RACES])
    probabilities = np.zeros(len(RACES))
    if face.get("race") in RACES:
        probabilities[RACES.index(face["race"])] = 1.0
    return probabilities


@dataclass
class Track:
    """One face followed across frames, with smoothed predictions."""

    id: int
    box: tuple[int, int, int, int]
    age: float | None
    gender: np.ndarray
    race: np.ndarray
    hits: int = 1
    missed: int = 0

    @classmethod
    def start(cls, track_id: int, face: dict) -> "Track":
        return cls(track_id, tuple(face["box"]), face.get("age"), _gender_probabilities(face), _race_probabilities(face))

    def observe(self, face: dict, smoothing: float) -> None:
        """Fold in a new detection: latest box, EMA of age and class confidences."""
        self.box = tuple(face["box"])
        if face.get("age") is not None:
            self.age = face["age"] if self.age is None else (1 - smoothing) * self.age + smoothing * face["age"]
        self.gender = (1 - smoothing) * self.gender + smoothing * _gender_probabilities(face)
        self.race = (1 - smoothing) * self.race + smoothing * _race_probabilities(face)
        self.hits += 1
        self.missed = 0

    def face(self) -> dict:
        """The smoothed answer, in the shape of an Analyzer face dict (plus "track")."""
        return {
            "track": self.id,
            "box": [int(v) for v in self.box],
            "age": None if self.age is None else round(float(self.age), 1),
            "gender": GENDERS[int(np.argmax(self.gender))],
            "gender_confidence": round(float(np.max(self.gender)), 4),
            "race": RACES[int(np.argmax(self.race))],
            "race_confidences": {name: round(float(p), 4) for name, p in zip(RACES, self.race)},
        }


@dataclass
class Tracker:
    """Greedy IoU matching of detections to tracks.

    `smoothing` is the weight of a new observation in the moving averages; a track that
    goes unmatched for more than `max_missed` detection rounds is dropped.
    """

    iou_threshold: float = 0.3
    smoothing: float = 0.3
    max_missed: int = 5
    tracks: list[Track] = field(default_factory=list)
    created: int = 0

    def update(self, faces: Sequence[dict]) -> list[Track]:
        """Match one frame's detections; returns the tracks seen in this frame."""
        pairs = sorted(
            ((iou(track.box, face["box"]), t, f) for t, track in enumerate(self.tracks) for f, face in enumerate(faces)),
            reverse=True,
        )
        used_tracks, used_faces = set(), set()
        for overlap, t, f in pairs:
            if overlap < self.iou_threshold:
                break
            if t in used_tracks or f in used_faces:
                continue
            self.tracks[t].observe(faces[f], self.smoothing)
            used_tracks.add(t)
            used_faces.add(f)
        for t, track in enumerate(self.tracks):
            if t not in used_tracks:
                track.missed += 1
        seen = [track for t, track in enumerate(self.tracks) if t in used_tracks]
        for f, face in enumerate(faces):
            if f not in used_faces:
                self.created += 1
                track = Track.start(self.created, face)
                self.tracks.append(track)
                seen.append(track)
        self.tracks = [track for track in self.tracks if track.missed <= self.max_missed]
        return seen

    def visible(self, grace: int = 1) -> list[Track]:
        """Tracks to draw: those matched in the latest `grace` + 1 detection rounds.

        The grace round keeps a box from blinking out when the detector misses a face
        for a single frame.
        """
        return [track for track in self.tracks if track.missed <= grace]


def _open(source: str | int | Path):
    import cv2

    if isinstance(source, (str, Path)) and not str(source).isdigit():
        path = Path(source)
        if not path.exists():
            raise HowoldError(f"{source}: no such file")
        if path.is_dir():
            raise HowoldError(f"{source}: is a folder, not a video")
        capture = cv2.VideoCapture(str(path))
        what = str(source)
    else:
        capture = cv2.VideoCapture(int(source))
        what = f"camera {int(source)}"
    if not capture.isOpened():
        capture.release()
        raise HowoldError(f"{what}: cannot be opened as a video (not a video, an unsupported format, or no such camera)")
    return capture, what


def _draw_fps(frame_bgr: np.ndarray, fps: float) -> None:
    import cv2

    text = f"{fps:.1f} fps"
    scale = max(0.4, min(frame_bgr.shape[:2]) / 600)
    thickness = max(1, round(scale * 2))
    origin = (max(4, round(8 * scale)), max(14, round(28 * scale)))
    cv2.putText(frame_bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(frame_bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def analyze_video(
    analyzer,
    source: str | int | Path,
    output: Path | str | None = None,
    every: int = 1,
    show: bool = False,
    progress: bool = True,
    tracker: Tracker | None = None,
    json_output: Path | str | None = None,
) -> dict:
    """Annotate a video file or camera (an int index); optionally write an mp4 / show it.

    `json_output`: a results file (JSONL, as `howold analyze --output` writes, started afresh)
    with a line per analysed frame, each face with its "track": `howold report` counts a
    person tracked across frames once.

    Returns {"frames", "analysed_frames", "tracks", "faces_per_frame_mean", "fps",
    "output", "source"}: `tracks` counts distinct faces followed, `faces_per_frame_mean`
    the faces detected per analysed frame, `fps` the processing speed.
    Raises HowoldError when the source cannot be opened or yields no frame.
    """
    import cv2

    if every < 1:
        raise HowoldError(f"--every {every}: must be 1 or more")
    capture, what = _open(source)
    tracker = tracker or Tracker()
    writer = None
    results = None
    bar = None
    frames = analysed = detected = 0
    fps_smoothed = 0.0
    started = time.perf_counter()
    try:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise HowoldError(f"{what}: no frame could be read (not a video, or an unsupported format)")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if progress and not isinstance(source, int) and total > 0:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc=Path(str(source)).name, leave=False)
        if output is not None:
            output = Path(output)
            output.parent.mkdir(parents=True, exist_ok=True)
            rate = capture.get(cv2.CAP_PROP_FPS)
            rate = rate if rate and math.isfinite(rate) and 0 < rate < 1000 else DEFAULT_FPS
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), rate, (width, height))
            if not writer.isOpened():
                raise HowoldError(f"{output}: cannot write a video there")
        if json_output is not None:
            from .results import ResultsWriter

            Path(json_output).unlink(missing_ok=True)
            results = ResultsWriter(json_output)
        while ok and frame is not None:
            tick = time.perf_counter()
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            rgb = np.ascontiguousarray(frame[:, :, 2::-1])
            if frames % every == 0:
                faces = analyzer.analyze(rgb)
                seen = tracker.update(faces)
                if results is not None:
                    boxes = {track.box: track.id for track in seen}
                    tracked = [{**face, "track": boxes.get(tuple(face["box"]))} for face in faces]
                    results.write({"source": f"{what}#frame={frames}", "model": getattr(analyzer, "model_id", None), "video": what, "frame": frames, "faces": tracked})
                analysed += 1
                detected += len(faces)
            annotated = draw_faces(rgb, [track.face() for track in tracker.visible()], legend=False)
            out = np.ascontiguousarray(annotated[:, :, ::-1])
            elapsed = time.perf_counter() - tick
            if elapsed > 0:
                fps_smoothed = 1 / elapsed if fps_smoothed == 0 else 0.9 * fps_smoothed + 0.1 / elapsed
            _draw_fps(out, fps_smoothed)
            if writer is not None:
                writer.write(out)
            frames += 1
            if bar is not None:
                bar.update(1)
            if show and _show(out, what):
                break
            ok, frame = capture.read()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if results is not None:
            results.close()
        if bar is not None:
            bar.close()
        if show:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    seconds = time.perf_counter() - started
    return {
        "source": what,
        "frames": frames,
        "analysed_frames": analysed,
        "tracks": tracker.created,
        "faces_per_frame_mean": round(detected / analysed, 3) if analysed else 0.0,
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "output": str(output) if output is not None else None,
        "output_json": str(json_output) if json_output is not None else None,
    }


def _show(frame_bgr: np.ndarray, title: str) -> bool:
    """Show a frame; True when the user pressed q or Esc."""
    import cv2

    try:
        cv2.imshow(f"howold - {title}", frame_bgr)
        key = cv2.waitKey(1) & 0xFF
    except cv2.error as error:
        raise HowoldError(f"cannot show a window ({str(error).strip().splitlines()[-1]}); OpenCV here has no GUI support, write --output instead") from None
    return key in (ord("q"), 27)
