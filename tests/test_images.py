"""Safe image decoding: every mode ends as RGB, every bad upload becomes a clear InvalidQueryError,
and letterbox bars are cropped without eating into dark thumbnails."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender.data.images import MAX_IMAGE_PIXELS, crop_letterbox, load_image
from recommender.errors import InvalidQueryError

from .synthetic import CHANNELS, jpeg_bytes, thumbnail


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width x height`` (a decompression bomb's calling card)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_rgba_is_composited_on_black() -> None:
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 0))  # fully transparent red
    image.paste((0, 255, 0, 255), (10, 0, 20, 10))  # opaque green right half
    decoded = load_image(encode(image, "PNG"))
    assert decoded.mode == "RGB" and decoded.size == (20, 10)
    assert decoded.getpixel((2, 2)) == (0, 0, 0)
    assert decoded.getpixel((15, 5)) == (0, 255, 0)


def test_palette_with_transparency_becomes_rgb() -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    image.paste(0, (0, 0, 8, 16))
    decoded = load_image(encode(image, "PNG", transparency=0))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((12, 8)) == (200, 30, 40)
    assert decoded.getpixel((2, 8)) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb() -> None:
    decoded = load_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert decoded.mode == "RGB"
    red, green, blue = decoded.getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_grayscale_keeps_its_range() -> None:
    gradient = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    decoded = load_image(encode(Image.fromarray(gradient), "PNG"))
    array = np.asarray(decoded)
    assert decoded.mode == "RGB" and array.shape == (64, 64, 3)
    assert array.max() == 255 and array.min() == 0  # not clipped to white, not crushed to black
    assert array[0, 0, 0] < array[32, 0, 0] < array[63, 63, 0]


@pytest.mark.parametrize("format", ["GIF", "PNG", "WEBP"])
def test_animated_image_gives_its_first_frame(format: str) -> None:
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    data = encode(frames[0], format, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    decoded = load_image(data)
    assert decoded.mode == "RGB" and decoded.size == (24, 24)
    red, green, blue = decoded.getpixel((12, 12))
    assert red > 200 and green < 40 and blue < 40


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I", "F", "RGBA", "P"])
def test_pil_images_of_any_mode_become_rgb(mode: str) -> None:
    assert load_image(Image.new(mode, (8, 6))).mode == "RGB"


@pytest.mark.parametrize("shape", [(6, 8), (6, 8, 1), (6, 8, 3), (6, 8, 4)])
def test_arrays_become_rgb(shape: tuple[int, ...]) -> None:
    decoded = load_image(np.full(shape, 128, dtype=np.uint8))
    assert decoded.mode == "RGB" and decoded.size == (8, 6)


def test_file_path_and_bytes_decode_the_same(tmp_path: Path) -> None:
    data = jpeg_bytes(thumbnail((30, 80, 200), "rectangle", seed=1))
    path = tmp_path / "thumb.jpg"
    path.write_bytes(data)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(data)))
    assert np.array_equal(np.asarray(load_image(str(path))), np.asarray(load_image(data)))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"this is not an image", "not an image"),
        (b"", "empty"),
        (jpeg_bytes(thumbnail((30, 80, 200), "rectangle", seed=1))[:3000], "truncated"),
        (png_declaring(50_000, 50_000), f"too large: the limit is {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels"),
        (png_declaring(8_000, 6_000), f"{MAX_IMAGE_PIXELS / 1e6:.1f} megapixels"),
        (np.zeros((4, 4, 5), dtype=np.uint8), "image array"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "image array"),
        (np.zeros((2, 2, 2, 3), dtype=np.uint8), "image array"),
        (12345, "Unsupported image input"),
        ("/definitely/not/here.jpg", "not found"),
    ],
    ids=["not-an-image", "empty", "truncated-jpeg", "bomb-huge", "bomb-over-limit", "5-channel-array",
         "empty-array", "4d-array", "int", "missing-path"],
)
def test_bad_images_raise_invalid_query_with_clear_text(source: object, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=f"(?i){message}"):
        load_image(source)


def test_letterbox_bars_are_removed_from_a_hqdefault_thumbnail() -> None:
    style = CHANNELS["Tech Reviews"]
    letterboxed = load_image(jpeg_bytes(thumbnail(style["colour"], style["shape"], seed=3, letterbox=True)))
    assert letterboxed.size == (480, 360)
    cropped = crop_letterbox(letterboxed)
    width, height = cropped.size
    assert width == 480
    assert abs(height - 270) <= 4  # 45 px bars, give or take JPEG ringing at the edge
    dark_rows = np.asarray(cropped.convert("L")).max(axis=1) < 16
    assert dark_rows.sum() <= 2  # at most a row of an uneven bar survives, never the bars


def test_pillarbox_bars_are_removed() -> None:
    image = Image.new("RGB", (480, 360), (0, 0, 0))
    image.paste((200, 120, 40), (60, 0, 420, 360))
    cropped = crop_letterbox(load_image(jpeg_bytes(image)))
    assert cropped.size[1] == 360 and abs(cropped.size[0] - 360) <= 4


def test_unequal_bars_of_an_off_centre_crop_are_both_removed() -> None:
    """A re-upload cropped off-centre keeps bars of 31 and 45 px: the content must come out as in the original."""
    style = CHANNELS["Tech Reviews"]
    original = load_image(jpeg_bytes(thumbnail(style["colour"], style["shape"], seed=3, letterbox=True)))
    reupload = original.crop((10, 14, 470, 360))  # 14 px off the top bar, none off the bottom one
    content, reupload_content = crop_letterbox(original), crop_letterbox(reupload)
    assert abs(reupload_content.size[1] - content.size[1]) <= 2
    dark_rows = np.asarray(reupload_content.convert("L")).max(axis=1) < 16
    assert dark_rows.sum() <= 2


def night_scene() -> Image.Image:
    """A dark thumbnail that is not letterboxed: black sky above a dimly lit street, a bright moon."""
    rng = np.random.default_rng(7)
    array = np.zeros((360, 480, 3), dtype=np.uint8)
    array[:120] = rng.integers(0, 10, (120, 480, 3))  # night sky, darker than any bar threshold
    array[120:] = rng.integers(10, 45, (240, 480, 3))  # street
    array[150:210, 300:360] = 230  # moon
    return Image.fromarray(array)


def test_dark_thumbnails_are_left_alone() -> None:
    night = load_image(jpeg_bytes(night_scene()))
    assert crop_letterbox(night).size == night.size
    low_key = Image.fromarray(np.random.default_rng(3).integers(0, 40, (360, 480, 3), dtype=np.uint8))
    assert crop_letterbox(low_key).size == low_key.size
    black = Image.new("RGB", (480, 360))
    assert crop_letterbox(black).size == black.size


def test_nothing_larger_than_a_4k_frame_is_decoded() -> None:
    """A thumbnail never needs more: the cap keeps concurrent uploads' decoded pixels small
    (docs/security.md measures the peak memory of 8 at once)."""
    assert MAX_IMAGE_PIXELS == 3840 * 2160
    frame = Image.linear_gradient("L").resize((3840, 2160)).convert("RGB")
    assert load_image(encoded_png(frame)).size == (3840, 2160)
    for width, height in ((3841, 2160), (4000, 3000), (5120, 2880)):  # a pixel more, a phone photo, 5K
        with pytest.raises(InvalidQueryError, match=rf"{width}x{height} pixels; the limit is 8.3 megapixels"):
            load_image(png_declaring(width, height))


def encoded_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
