"""face.images.load_image and the CLI on awkward inputs the tests make themselves.

No network and no shared data: every file is written into tmp_path. The two CLI tests
run `python -m face.cli` as a subprocess (a few seconds each, for loading the models).
"""
from __future__ import annotations

import io
import re
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face.errors import ImageError
from face.images import MAX_PIXELS, load_image

ROOT = Path(__file__).resolve().parents[1]


def jpeg_bytes(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


def gradient(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 128)], axis=2).astype(np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height, all black, compressed to a few KB."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    chunks.append(compressor.compress(row * (height % 1000)))
    chunks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(chunks)) + png_chunk(b"IEND", b"")


# ---- unreadable inputs: one clear ImageError naming the file ---------------------------------


def test_corrupt_bytes_file(tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)))
    with pytest.raises(ImageError, match="corrupt.jpg") as caught:
        load_image(path)
    assert "corrupt" in str(caught.value) or "not an image" in str(caught.value)


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes(gradient(200, 300))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated\.jpg: corrupt or truncated"):
        load_image(path)
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_empty_file_and_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        load_image(path)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n" * 20)
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        load_image(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


# ---- image modes --------------------------------------------------------------------------------


def check_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8
    assert array.flags["C_CONTIGUOUS"]


def test_greyscale(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (10, 1))
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    array = load_image(path)
    check_rgb(array, 10, 64)
    assert np.array_equal(array[:, :, 0], grey) and np.array_equal(array[:, :, 1], grey) and np.array_equal(array[:, :, 2], grey)


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)  # opaque red
    rgba[:, 4:] = (0, 0, 255, 0)  # fully transparent blue
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    array = load_image(path)
    check_rgb(array, 8, 8)
    assert tuple(array[0, 0]) == (255, 0, 0)
    assert tuple(array[0, 7]) == (255, 255, 255)
    # an RGBA numpy array is composited the same way
    assert np.array_equal(load_image(rgba), array)


def palette_image() -> Image.Image:
    image = Image.new("P", (6, 4))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pixels = np.array([[0, 0, 1, 1, 2, 2]] * 4, np.uint8)
    image.putdata(pixels.ravel().tolist())
    return image


def test_palette_without_transparency(tmp_path):
    path = tmp_path / "palette.png"
    palette_image().save(path)
    array = load_image(path)
    check_rgb(array, 4, 6)
    assert tuple(array[0, 0]) == (255, 0, 0) and tuple(array[0, 2]) == (0, 255, 0) and tuple(array[0, 5]) == (0, 0, 255)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparency(tmp_path, suffix):
    path = tmp_path / f"palette_transparent{suffix}"
    palette_image().save(path, transparency=2)  # blue is the transparent index
    array = load_image(path)
    check_rgb(array, 4, 6)
    assert tuple(array[0, 0]) == (255, 0, 0)
    assert tuple(array[0, 5]) == (255, 255, 255)


def test_16_bit_png(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16).repeat(3, axis=0)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I")  # really a 16-bit file
    array = load_image(path)
    check_rgb(array, 3, 4)
    assert list(array[0, :, 0]) == [0, 64, 128, 255]
    assert np.array_equal(load_image(values), array)  # uint16 arrays scale the same way


def test_exif_orientation_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high as stored
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    array = load_image(path)
    # Turned clockwise, the stored left column becomes the top row: 20 wide, 40 high,
    # red on top, blue below.
    check_rgb(array, 40, 20)
    assert array[5, 10, 0] > 200 and array[5, 10, 2] < 60
    assert array[35, 10, 2] > 200 and array[35, 10, 0] < 60
    assert np.array_equal(load_image(path.read_bytes()), array)


# ---- decompression bombs -----------------------------------------------------------------------


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data stops after a few bytes.

    Decoding it can only fail ("corrupt or truncated"), so being refused as too large proves
    the refusal came from the header, before any decoding: no clock needed.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    data = zlib.compress(b"\x00" * 1000)[:20]  # the start of a stream, cut short
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_decompression_bomb_refused(tmp_path, side):
    """A few-KB genuine PNG claiming side x side pixels: refused, naming the file."""
    path = tmp_path / f"bomb{side}.png"
    path.write_bytes(bomb_png(side, side))
    assert path.stat().st_size < 200_000 and side * side > MAX_PIXELS
    with pytest.raises(ImageError, match=rf"bomb{side}\.png: image too large") as caught:
        load_image(path)
    assert "decompression bomb" in str(caught.value)


@pytest.mark.parametrize("width, height", [(9_000, 9_000), (80_001, 1_000), (10_000, 10_000)])
def test_too_many_pixels_are_refused_before_decoding(tmp_path, width, height):
    """81 MP is over our limit (80 MP) but under Pillow's own (89.5 MP): only our check stops it."""
    data = header_only_png(width, height)
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with Image.open(path) as image:  # Pillow reads the size from the header without complaint...
        assert image.size == (width, height)
    if width * height < Image.MAX_IMAGE_PIXELS:  # ...and at this size would decode it (and fail)
        with pytest.raises(OSError):
            Image.open(path).load()
    for source in (path, data):
        with pytest.raises(ImageError, match="image too large") as caught:
            load_image(source)
        assert "decompression bomb" in str(caught.value)
        if width * height < Image.MAX_IMAGE_PIXELS:  # (above it Pillow's own warning comes first)
            assert f"({width}x{height} = {width * height:,} pixels, limit {MAX_PIXELS:,})" in str(caught.value)
    # the control: at a size within the limit the same file is decoded, and fails as corrupt
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(header_only_png(100, 100))


def test_max_pixels_parameter(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(gradient(30, 40)).save(path)
    with pytest.raises(ImageError, match=r"small\.png: image too large \(40x30 = 1,200 pixels, limit 1,000\)"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageError, match="too large"):
        load_image(Image.open(path), max_pixels=1000)


# ---- the CLI on a mixed folder -----------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "face.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_analyze_mixed_folder(tmp_path):
    from skimage import data

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "a_astronaut.jpg", quality=95)
    Image.fromarray(np.full((120, 160), 200, np.uint8)).save(folder / "b_blank.png")
    (folder / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0not really a jpeg" * 50)
    (folder / "d_empty.png").write_bytes(b"")
    data_bytes = jpeg_bytes(gradient(100, 100))
    (folder / "e_truncated.jpg").write_bytes(data_bytes[: len(data_bytes) // 3])
    (folder / "f_notes.txt").write_text("not an image\n")
    (folder / "g_subfolder").mkdir()
    out, report = tmp_path / "out", tmp_path / "report.json"

    result = run_cli("analyze", str(folder), "--output-dir", str(out), "--json", str(report), cwd=tmp_path)

    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr  # some inputs failed
    assert sorted(p.name for p in out.iterdir()) == ["a_astronaut.jpg", "b_blank.png"]
    with Image.open(out / "a_astronaut.jpg") as annotated:
        assert annotated.size == (512, 512)
    results = json.loads(report.read_text())
    by_name = {Path(r["source"]).name: r for r in results}
    assert list(by_name) == ["a_astronaut.jpg", "b_blank.png", "c_corrupt.jpg", "d_empty.png", "e_truncated.jpg"]
    assert len(by_name["a_astronaut.jpg"]["faces"]) >= 1 and "error" not in by_name["a_astronaut.jpg"]
    assert by_name["b_blank.png"]["faces"] == []
    lines = [line for line in result.stderr.splitlines() if line.startswith("howold: ")]
    for bad in ("c_corrupt.jpg", "d_empty.png", "e_truncated.jpg"):
        assert "faces" not in by_name[bad] and bad in by_name[bad]["error"]
        mine = [line for line in lines if bad in line]
        assert len(mine) == 1, result.stderr
        assert mine[0].startswith(f"howold: {folder / bad}: ")
    assert any("f_notes.txt" in line and "skipped" in line for line in lines)
    assert any("g_subfolder" in line and "skipped" in line for line in lines)
    assert not any("a_astronaut" in line or "b_blank" in line for line in lines)


def test_cli_video_on_non_video_file(tmp_path, capsys):
    """In this process (a subprocess would only add an import of TensorFlow): a traceback would be an exception here."""
    from face.cli import main

    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video\n" * 100)
    assert main(["video", str(fake)]) == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, no traceback
    assert line.startswith(f"howold: error: {fake}: cannot be opened as a video")


def test_analyze_video_refuses_what_it_cannot_open(tmp_path):
    """Checked before the analyzer is used, so no model is needed here."""
    from face.errors import HowoldError
    from face.video import analyze_video

    fake = tmp_path / "clip.avi"
    fake.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 10)
    with pytest.raises(HowoldError, match=r"clip\.avi: cannot be opened as a video|clip\.avi: no frame"):
        analyze_video(None, str(fake))
    with pytest.raises(HowoldError, match=r"nope\.mp4: no such file"):
        analyze_video(None, tmp_path / "nope.mp4")
    with pytest.raises(HowoldError, match="folder"):
        analyze_video(None, str(tmp_path))


# ---- arrays and unusual PIL modes, value by value ----------------------------------------------


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.array([[0, 7, 255]], np.uint8), [0, 7, 255]),  # greyscale HxW
        (np.array([[[0], [7], [255]]], np.uint8), [0, 7, 255]),  # HxWx1
        (np.array([[0, 128, 129, 257 * 100, 33025, 65535]], np.uint16), [0, 0, 1, 100, 129, 255]),  # 16 bit: / 257, rounded
        (np.array([[0.0, 0.2, 0.5, 1.0]], np.float32), [0, 51, 128, 255]),  # 0..1 floats
        (np.array([[0.0, 1.5, 100.4, 100.6, 254.6]], np.float64), [0, 2, 100, 101, 255]),  # 0..255 floats
        (np.array([[-3.0, 2.0, 300.0]], np.float64), [0, 2, 255]),  # clipped
    ],
)
def test_single_channel_arrays_become_grey_rgb(array, expected):
    rgb = load_image(array)
    check_rgb(rgb, 1, len(expected))
    assert rgb[0, :, 0].tolist() == expected
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_colour_arrays_keep_their_channels():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    assert np.array_equal(load_image(rgb), rgb)
    mirrored = rgb[:, ::-1]  # a view with negative strides
    check_rgb(load_image(mirrored), 2, 3)
    assert np.array_equal(load_image(mirrored), mirrored)
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128], [0, 0, 0, 51]]], np.uint8)
    out = load_image(rgba)
    check_rgb(out, 1, 4)
    # over white: opaque keeps the colour, transparent is white, half-transparent half-way (rounded)
    assert out[0].tolist() == [[200, 100, 0], [255, 255, 255], [227, 177, 127], [204, 204, 204]]


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((0, 4, 3), np.uint8), "empty array"),
        (np.zeros((4, 4), np.int32), "unsupported array dtype int32"),
        (np.zeros((4, 4, 2), np.uint8), r"array of shape \(4, 4, 2\) is not an image"),
        (np.zeros((2, 4, 4, 3), np.uint8), r"array of shape \(2, 4, 4, 3\) is not an image \(want HxW, HxWx3 or HxWx4\)"),
    ],
)
def test_arrays_that_are_not_images(array, words):
    with pytest.raises(ImageError, match=rf"<array {re.escape(str(array.shape))} {array.dtype}>: {words}"):
        load_image(array)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_16_and_32_bit_greyscale_modes(mode):
    if mode == "I":
        image = Image.fromarray(np.array([[0, 33025, 65535]], np.int32), mode="I")
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        image = Image.frombytes(mode, (3, 1), np.array([0, 33025, 65535], dtype).tobytes())
    assert image.mode == mode
    assert load_image(image)[0, :, 0].tolist() == [0, 129, 255]  # 65535 is white; 33025 / 65535 * 255 = 128.5
    if mode == "I":  # 32-bit values that stay within 0..255 are taken as 8-bit
        small = Image.fromarray(np.array([[0, 100, 255]], np.int32), mode="I")
        assert load_image(small)[0, :, 0].tolist() == [0, 100, 255]
        assert load_image(Image.fromarray(np.array([[0, 256]], np.int32), mode="I"))[0, :, 0].tolist() == [0, 1]


def test_float_and_grey_alpha_modes():
    floats = Image.fromarray(np.array([[-5.0, 10.7, 300.0]], np.float32), mode="F")
    assert load_image(floats)[0, :, 0].tolist() == [0, 10, 255]
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), mode="LA")
    assert load_image(la)[0].tolist() == [[50, 50, 50], [255, 255, 255]]


def test_pil_images_are_named_in_errors():
    with pytest.raises(ImageError, match=r"^<Image>: image too large \(4x3 = 12 pixels, limit 10\)"):
        load_image(Image.new("RGB", (4, 3)), max_pixels=10)
