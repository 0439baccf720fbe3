"""Thumbnails made on demand from image URIs, cached on disk outside the lake.

An image is read and decoded by the guarded decoder (:func:`brain.images.load`), fitted
into a ``size``×``size`` square (small images such as 8×8 digits are enlarged with
nearest-neighbour so their pixels stay sharp) and saved as PNG under the cache folder,
named by the file's content hash and the size, so a changed file gets a new thumbnail.
Cache files are written under a temporary name and renamed: concurrent requests for
the same thumbnail never read half a file. An image that cannot be read or decoded
gets :func:`placeholder` instead (never cached: the file may appear later).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from brain import images

log = logging.getLogger(__name__)

SIZES = (64, 128, 256, 512)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lakebrain" / "thumbnails"


class ThumbnailCache:
    """Thumbnails of one lake's images under ``folder`` (default: ``~/.cache/lakebrain/thumbnails/<lake hash>``)."""

    def __init__(self, lake_uri: str, folder: str | Path | None = None):
        self.folder = Path(folder) if folder else DEFAULT_CACHE / hashlib.sha1(lake_uri.encode()).hexdigest()[:16]

    def png(self, uri: str, content_hash: str | None, size: int) -> tuple[bytes, bool]:
        """(PNG bytes, True) of the image's thumbnail, or (a placeholder, False) when it cannot be decoded."""
        if size not in SIZES:
            raise ValueError(f"thumbnail size must be one of {SIZES}, got {size}")
        key = content_hash or hashlib.sha1(uri.encode()).hexdigest()
        path = self.folder / f"{key}-{size}.png"
        if path.exists():
            return path.read_bytes(), True
        try:
            data = thumbnail_png(images.load(uri), size)
        except images.ImageError as err:
            log.warning("thumbnail placeholder: %s", err)
            return placeholder(size), False
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".tmp", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
        return data, True


def thumbnail_png(pixels, size: int) -> bytes:
    """An H×W×3 uint8 array fitted into size×size (aspect kept) as PNG bytes."""
    img = Image.fromarray(pixels)
    scale = size / max(img.width, img.height)
    target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(target, Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS)
    return to_png(img)


def full_png(pixels) -> bytes:
    """The whole decoded image re-encoded as PNG (what the browser gets, whatever the file's format)."""
    return to_png(Image.fromarray(pixels))


def to_png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=len(SIZES) + 1)
def placeholder(size: int) -> bytes:
    """A grey square with a cross: shown for a missing or undecodable image."""
    img = Image.new("RGB", (size, size), (205, 205, 205))
    draw = ImageDraw.Draw(img)
    pad = size // 4
    draw.line((pad, pad, size - pad, size - pad), fill=(140, 140, 140), width=max(1, size // 32))
    draw.line((pad, size - pad, size - pad, pad), fill=(140, 140, 140), width=max(1, size // 32))
    return to_png(img)
