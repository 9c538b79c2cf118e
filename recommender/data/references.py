"""Thumbnails by reference: a catalog cell may hold an ``http(s)`` URL or a file path instead of bytes.

Large catalogs keep their pictures where they already are (YouTube's
``https://i.ytimg.com/vi/<id>/hqdefault.jpg``) instead of copying every JPEG into the bundle. A
reference is fetched when the build needs its pixels (validation, training, embedding), with a
timeout and the same size cap as an upload (:data:`~.images.MAX_IMAGE_BYTES`); serving shows a URL as
it is, so the visitor's browser fetches it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from ..errors import InvalidQueryError
from .images import MAX_IMAGE_BYTES

#: Seconds to wait for one thumbnail; a stalled host must not stall the build.
FETCH_TIMEOUT_S = 10.0
_SCHEMES = ("http://", "https://")


def is_url(reference: str) -> bool:
    return reference.strip().lower().startswith(_SCHEMES)


def read_reference(reference: str, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """The encoded image a URL or file path names, at most :data:`MAX_IMAGE_BYTES`.

    Raises :class:`InvalidQueryError` naming the reference when it cannot be read (missing file, refused
    connection, HTTP error, timeout, too large), which the catalog turns into a skipped row.
    """
    reference = reference.strip()
    if not reference:
        raise InvalidQueryError("empty image reference")
    if not is_url(reference):
        path = Path(reference)
        if not path.is_file():
            raise InvalidQueryError(f"image file {reference} not found")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise InvalidQueryError(f"image file {reference} is over {MAX_IMAGE_BYTES // 2**20} MiB")
        return path.read_bytes()
    request = urllib.request.Request(reference, headers={"User-Agent": "video-recommender-build"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http/https only, checked above)
            data = response.read(MAX_IMAGE_BYTES + 1)
    except urllib.error.HTTPError as error:
        raise InvalidQueryError(f"{reference} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:  # refused, unknown host, timeout
        reason = getattr(error, "reason", error)
        raise InvalidQueryError(f"{reference} is unreachable ({reason})") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidQueryError(f"{reference} is over {MAX_IMAGE_BYTES // 2**20} MiB")
    return data
