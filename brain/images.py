"""Reading and decoding images: bytes from any URI, pixels as H×W×3 uint8 arrays."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageError(ValueError):
    """An image that cannot be read or decoded; the message names its URI."""


def read_bytes(uri: str) -> bytes:
    """The file's bytes; local paths and any URI pyarrow's filesystems know."""
    try:
        if "://" not in uri:
            return Path(uri).read_bytes()
        fs, path = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise ImageError(f"{uri}: file not found") from None
    except OSError as err:
        raise ImageError(f"{uri}: cannot read: {err}") from None


def decode(data: bytes, *, uri: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an H×W×3 uint8 RGB array (grey and alpha are converted)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{uri}: not a decodable image ({err})") from None
    return np.asarray(rgb, dtype=np.uint8)


def load(uri: str) -> np.ndarray:
    return decode(read_bytes(uri), uri=uri)
