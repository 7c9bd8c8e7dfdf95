"""Boxes and labels ("34 female White") drawn on an image, legible on any background.

Each face gets a box (a light line with a dark outline) and a label of white text on a
dark, semi-opaque plate. The font is DejaVu Sans, which ships with matplotlib and covers
most of Unicode; its size follows the image size. Labels are kept inside the image: above
the box when there is room, else below it, else inside its top edge.

In a crowd, full labels would cover one another and the faces. Then each face gets only
its number (its place in the results, largest face first), and a legend strip below the
photo carries the full labels.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BOX_COLOUR = (80, 220, 255)  # light cyan: stands out on skin, sky and dark clothes
OUTLINE_COLOUR = (0, 0, 0)
TEXT_COLOUR = (255, 255, 255)
PLATE_COLOUR = (0, 0, 0)
PLATE_ALPHA = 170  # of 255


@functools.lru_cache(maxsize=1)
def font_path() -> str | None:
    """DejaVu Sans from matplotlib's bundled fonts, found without importing matplotlib (seconds),
    else the system's; None: PIL's own."""
    from importlib.util import find_spec
    from pathlib import Path

    try:
        spec = find_spec("matplotlib")
    except (ImportError, ValueError):
        spec = None
    places = [Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"] if spec and spec.origin else []
    places.append(Path("/usr/share/fonts/truetype/dejavu"))
    return next((str(place / "DejaVuSans.ttf") for place in places if (place / "DejaVuSans.ttf").is_file()), None)


@functools.lru_cache(maxsize=32)
def get_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The label font at a pixel size, cached per size."""
    path = font_path()
    if path:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def font_size_for(width: int, height: int) -> int:
    """Label font size in pixels for an image: about 1/40 of the shorter side, 11 to 64."""
    return int(min(64, max(11, round(min(width, height) / 40))))


def label_for(face: dict) -> str:
    """ "34 female White": age rounded, gender, race; missing fields are left out."""
    parts = []
    if face.get("age") is not None:
        parts.append(str(int(round(float(face["age"])))))
    for key in ("gender", "race"):
        if face.get(key):
            parts.append(str(face[key]))
    if not parts and face.get("label"):
        parts.append(str(face["label"]))
    return " ".join(parts)


Rect = tuple[int, int, int, int]


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clipped_box(box, width: int, height: int) -> Rect:
    left, top, right, bottom = (int(round(float(v))) for v in box)
    left, top = max(0, min(left, width - 1)), max(0, min(top, height - 1))
    return left, top, max(left + 1, min(right, width - 1)), max(top + 1, min(bottom, height - 1))


def _place_plate(box: Rect, plate_w: int, plate_h: int, width: int, height: int) -> Rect:
    """Above the box if it fits, else below it, else just inside its top edge."""
    left, top, _, bottom = box
    if top - plate_h >= 0:
        plate_top = top - plate_h
    elif bottom + plate_h <= height:
        plate_top = bottom
    else:
        plate_top = top
    plate_top = max(0, min(plate_top, height - plate_h))
    plate_left = max(0, min(left, width - plate_w))
    return plate_left, plate_top, plate_left + plate_w, plate_top + plate_h


def labels_collide(plates: Sequence[Rect], boxes: Sequence[Rect]) -> bool:
    """Whether any label plate covers another plate or another face's box."""
    for i, plate in enumerate(plates):
        for j in range(len(plates)):
            if j != i and (_overlap(plate, plates[j]) or _overlap(plate, boxes[j])):
                return True
    return False


def draw_faces(image: np.ndarray, faces: Sequence[dict], legend: bool = True) -> np.ndarray:
    """A copy of the RGB image with each face's box and label drawn on it.

    `faces` are dicts as Analyzer.analyze returns (a "box" [left, top, right, bottom] and
    optional "age", "gender", "race"); a face may carry its own "label" string instead.
    When the labels would overlap, the photo shows numbers and a legend is added below it,
    unless `legend` is False (video frames keep their size, and their full labels).
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    faces = [face for face in faces if face.get("box") is not None and len(face["box"]) == 4]
    if not faces:
        return array.copy()
    height, width = array.shape[:2]
    size = font_size_for(width, height)
    font = get_font(size)
    line = max(2, round(size / 8))
    pad = max(2, round(size / 4))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def plate_for(text: str, box: Rect) -> tuple[Rect, tuple[int, int]]:
        x0, y0, x1, y1 = measure.textbbox((0, 0), text, font=font)
        plate = _place_plate(box, x1 - x0 + 2 * pad, y1 - y0 + 2 * pad, width, height)
        return plate, (plate[0] + pad - x0, plate[1] + pad - y0)

    boxes = [_clipped_box(face["box"], width, height) for face in faces]
    full = [face.get("label") if isinstance(face.get("label"), str) else label_for(face) for face in faces]
    placed = [plate_for(text, box) for text, box in zip(full, boxes)]
    numbered = legend and labels_collide([plate for plate, _ in placed], boxes)
    texts = [str(i + 1) for i in range(len(faces))] if numbered else full
    if numbered:
        placed = [plate_for(text, box) for text, box in zip(texts, boxes)]

    base = Image.fromarray(array).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    plates = ImageDraw.Draw(overlay)
    for (left, top, right, bottom), text, (plate, _) in zip(boxes, texts, placed):
        # Dark outline under a light line: the box shows on bright and dark backgrounds.
        plates.rectangle((left, top, right, bottom), outline=OUTLINE_COLOUR + (255,), width=line + 2)
        plates.rectangle((left + 1, top + 1, right - 1, bottom - 1), outline=BOX_COLOUR + (255,), width=line)
        if text:
            plates.rectangle(plate, fill=PLATE_COLOUR + (PLATE_ALPHA,))
    composed = Image.alpha_composite(base, overlay)
    draw = ImageDraw.Draw(composed)
    for text, (_, position) in zip(texts, placed):
        if text:
            draw.text(position, text, font=font, fill=TEXT_COLOUR + (255,))
    photo = composed.convert("RGB")
    if numbered:
        photo = _with_legend(photo, [f"{i + 1}: {text}" for i, text in enumerate(full)], font, pad)
    return np.asarray(photo, dtype=np.uint8)


def _with_legend(photo: Image.Image, lines: list[str], font, pad: int) -> Image.Image:
    """The photo above a white strip listing `lines` in as many columns as fit its width."""
    measure = ImageDraw.Draw(photo)
    boxes = [measure.textbbox((0, 0), text, font=font) for text in lines]
    cell_w = max(b[2] - b[0] for b in boxes) + 4 * pad
    cell_h = max(b[3] - b[1] for b in boxes) + 2 * pad
    columns = max(1, (photo.width - 2 * pad) // cell_w)
    rows = -(-len(lines) // columns)
    legend = Image.new("RGB", (photo.width, photo.height + rows * cell_h + 2 * pad), (255, 255, 255))
    legend.paste(photo, (0, 0))
    draw = ImageDraw.Draw(legend)
    for i, text in enumerate(lines):
        row, column = divmod(i, columns)
        draw.text((pad + column * cell_w, photo.height + pad + row * cell_h), text, font=font, fill=(0, 0, 0))
    return legend
