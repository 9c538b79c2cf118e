"""Safe image decoding and the preprocessing every thumbnail goes through.

Uploads come from strangers: decoding is capped (decompression bombs), every mode
(RGBA, palette, CMYK, 16-bit, animated) ends up as plain RGB, and failures become
:class:`InvalidQueryError` with a message a person can act on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidQueryError

#: Largest accepted image, in pixels: a 4K frame (8.3 M), far more than a thumbnail needs. Larger
#: ones are refused before decoding; the cap bounds the memory of concurrent uploads (docs/security.md).
MAX_IMAGE_PIXELS = 3840 * 2160
#: Largest accepted encoded image, in bytes.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

ImageInput = Union[Image.Image, bytes, bytearray, str, Path, np.ndarray]


def load_image(source: ImageInput, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``source`` into an RGB :class:`PIL.Image.Image`, or raise :class:`InvalidQueryError`.

    Accepts a PIL image, encoded bytes, a file path or an ``HxWxC`` uint8 array. ``draft``
    lets JPEG decoding scale down by DCT (at least to that size), which is much faster.
    """
    if isinstance(source, Image.Image):
        image = source
        _check_pixels(image.size)
    elif isinstance(source, np.ndarray):
        array = source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source
        if array.ndim not in (2, 3) or array.size == 0 or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise InvalidQueryError(f"Image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {source.shape}.")
        _check_pixels((array.shape[1], array.shape[0]))
        image = Image.fromarray(np.ascontiguousarray(array).astype(np.uint8, copy=False))
    else:
        if isinstance(source, (str, Path)):
            data = read_image_bytes(Path(source))
        elif isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            raise InvalidQueryError(f"Unsupported image input of type {type(source).__name__}.")
        image = _decode(data, draft)
    return _to_rgb(image)


def read_image_bytes(path: Path) -> bytes:
    """The bytes of an image file, refused unread if it is missing or over :data:`MAX_IMAGE_BYTES`."""
    if not path.is_file():
        raise InvalidQueryError(f"Image file not found: {path}")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        raise InvalidQueryError(
            f"Image file is {path.stat().st_size / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB."
        )
    return path.read_bytes()


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidQueryError(
            f"Image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels (a 4K frame)."
        )
    if width < 1 or height < 1:
        raise InvalidQueryError("Image is empty.")


def _decode(data: bytes, draft: tuple[int, int] | None = None) -> Image.Image:
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidQueryError(f"Image is {len(data) / 2**20:.1f} MiB; the limit is {MAX_IMAGE_BYTES // 2**20} MiB.")
    if not data:
        raise InvalidQueryError("Image file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image.size)  # before decoding a single pixel
            image.seek(0)  # animated images: first frame
            if draft is not None and image.format == "JPEG":
                image.draft("RGB", draft)
            image.load()
    except InvalidQueryError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses far-too-large images before their size reaches _check_pixels: same message.
        raise InvalidQueryError(f"Image is too large: the limit is {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels "
                                "(a 4K frame).") from None
    except UnidentifiedImageError:
        raise InvalidQueryError("File is not an image Pillow can read (expected JPEG, PNG, WebP, GIF, BMP...).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidQueryError(f"Image is corrupted or truncated: {error}") from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB; transparency is composited on black, like YouTube's player background."""
    image = ImageOps.exif_transpose(image) if hasattr(image, "getexif") else image
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = max(float(array.max()), 1.0)
        image = Image.fromarray((array / peak * 255).astype(np.uint8))
    if image.mode == "P" or image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def crop_letterbox(image: Image.Image, threshold: int = 16, max_fraction: float = 0.3) -> Image.Image:
    """Remove near-black bars (hqdefault 480x360 thumbnails of 16:9 videos carry 45 px bars).

    A row or column counts as bar when its brightest pixel is below ``threshold``. Bars come in
    pairs, so a side is trimmed only when the opposite side is dark too (a night sky at the top
    of a thumbnail is content, not a bar). Each side loses its own dark margin, at most
    ``max_fraction`` of the dimension: a re-upload cropped off-centre keeps unequal bars, and
    trimming both fully puts its content back in the same frame as the original's.
    """
    gray = np.asarray(image.convert("L"))
    height, width = gray.shape
    rows = gray.max(axis=1) >= threshold
    cols = gray.max(axis=0) >= threshold
    if not rows.any() or not cols.any():
        return image
    top, bottom = _paired_margins(rows, int(height * max_fraction))
    left, right = _paired_margins(cols, int(width * max_fraction))
    if top == bottom == left == right == 0:
        return image
    return image.crop((left, top, width - right, height - bottom))


def _paired_margins(content: np.ndarray, limit: int) -> tuple[int, int]:
    """Dark margins at both ends of a 1-D ``content`` mask, or none if either end has none."""
    start, end = int(np.argmax(content)), int(np.argmax(content[::-1]))
    if start == 0 or end == 0:
        return 0, 0
    return min(start, limit), min(end, limit)
