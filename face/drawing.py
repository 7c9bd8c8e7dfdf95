"""Boxes and labels ("34 female White") drawn on an image, legible on any background.

Each face gets a box (a light line with a dark outline) and a label of white text on a
dark, semi-opaque plate. The font is DejaVu Sans, which ships with matplotlib and covers
most of Unicode; its size follows the image size. Labels are kept inside the image: above
the box when there is room, else below it, else inside its top edge.
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
    """DejaVu Sans from matplotlib's bundled fonts (None if matplotlib is unusable)."""
    try:
        from matplotlib import font_manager

        return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"), fallback_to_default=True)
    except Exception:  # noqa: BLE001 - any trouble finding the font falls back to PIL's own
        return None


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


def draw_faces(image: np.ndarray, faces: Sequence[dict]) -> np.ndarray:
    """A copy of the RGB image with each face's box and label drawn on it.

    `faces` are dicts as Analyzer.analyze returns (a "box" [left, top, right, bottom] and
    optional "age", "gender", "race"); a face may carry its own "label" string instead.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    if not faces:
        return array.copy()
    height, width = array.shape[:2]
    base = Image.fromarray(array).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    plates = ImageDraw.Draw(overlay)
    size = font_size_for(width, height)
    font = get_font(size)
    line = max(2, round(size / 8))
    pad = max(2, round(size / 4))

    texts = []
    for face in faces:
        box = face.get("box")
        if box is None or len(box) != 4:
            continue
        left, top, right, bottom = (int(round(float(v))) for v in box)
        left, top = max(0, min(left, width - 1)), max(0, min(top, height - 1))
        right, bottom = max(left + 1, min(right, width - 1)), max(top + 1, min(bottom, height - 1))
        # Dark outline under a light line: the box shows on bright and dark backgrounds.
        plates.rectangle((left, top, right, bottom), outline=OUTLINE_COLOUR + (255,), width=line + 2)
        plates.rectangle((left + 1, top + 1, right - 1, bottom - 1), outline=BOX_COLOUR + (255,), width=line)
        text = face.get("label") if isinstance(face.get("label"), str) else label_for(face)
        if not text:
            continue
        x0, y0, x1, y1 = plates.textbbox((0, 0), text, font=font)
        text_w, text_h = x1 - x0, y1 - y0
        plate_w, plate_h = text_w + 2 * pad, text_h + 2 * pad
        # Above the box if it fits, else below it, else just inside its top edge.
        if top - plate_h >= 0:
            plate_top = top - plate_h
        elif bottom + plate_h <= height:
            plate_top = bottom
        else:
            plate_top = top
        plate_top = max(0, min(plate_top, height - plate_h))
        plate_left = max(0, min(left, width - plate_w))
        plates.rectangle((plate_left, plate_top, plate_left + plate_w, plate_top + plate_h), fill=PLATE_COLOUR + (PLATE_ALPHA,))
        texts.append(((plate_left + pad - x0, plate_top + pad - y0), text))

    composed = Image.alpha_composite(base, overlay)
    draw = ImageDraw.Draw(composed)
    for position, text in texts:
        draw.text(position, text, font=font, fill=TEXT_COLOUR + (255,))
    return np.asarray(composed.convert("RGB"), dtype=np.uint8)
