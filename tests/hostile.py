"""A folder of hostile files, as people and programs leave them next to good images.

:func:`write_hostile_folder` writes good images (unicode names included) and one file of
each bad kind; it returns, for each bad file, the words its ``ingest_errors`` reason must
contain. Used by the unit and integration tests and by ``bench/hostile_input.py``.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

BIG_SIDE = 12_000


def textured(rng: np.random.Generator, size: int, base: int) -> np.ndarray:
    return np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)


def png_with_declared_size(path: Path, width: int, height: int) -> None:
    """A valid 8×8 PNG whose header (IHDR, with a correct CRC) declares ``width`` × ``height``."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    raw = path.read_bytes()
    body = bytearray(raw[16:29])  # IHDR data: width, height, depth, colour, compression, filter, interlace
    body[0:8] = struct.pack(">II", width, height)
    chunk = b"IHDR" + bytes(body)
    path.write_bytes(raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:])


def big_png(path: Path, side: int = BIG_SIDE) -> None:
    """A real ``side``² RGB PNG (colour ramps and bands, a few MB), written by libvips in streamed strips."""
    import pyvips

    xy = pyvips.Image.xyz(side, side)
    red, green = (xy[0] * (255.0 / side)).cast("uchar"), ((xy[1] // 1000) * 20).cast("uchar")
    red.bandjoin([green, 120]).copy(interpretation="srgb").pngsave(str(path), compression=6)


def write_hostile_folder(root: Path, *, seed: int = 0, good_per_class: int = 4, big: bool = True) -> dict[str, str]:
    """Good images under ``root/<label>/`` and one bad file of each kind; {bad file path: expected reason words}."""
    rng = np.random.default_rng(seed)
    for c, label in enumerate(["cat", "dog", "café 猫"]):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(good_per_class):
            Image.fromarray(textured(rng, 24, 60 + 60 * c)).save(folder / f"{label}-{i} ü.png")
    bad = root / "cat"
    expected: dict[str, str] = {}

    png_with_declared_size(bad / "bomb.png", 100_000, 100_000)
    expected[str(bad / "bomb.png")] = "decompression bomb"
    os.mkfifo(bad / "fifo.png")
    expected[str(bad / "fifo.png")] = "not a regular file (a FIFO)"
    os.symlink("/dev/zero", bad / "zeros.png")
    expected[str(bad / "zeros.png")] = "not a regular file (a character device)"
    data = (root / "dog" / "dog-0 ü.png").read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    expected[str(bad / "truncated.png")] = "truncated"
    (bad / "empty.png").write_bytes(b"")
    expected[str(bad / "empty.png")] = "empty file"
    (bad / "notes.jpg").write_text("not an image, whatever the extension says\n")
    expected[str(bad / "notes.jpg")] = "not a decodable image"
    if big:
        big_png(root / "dog" / "huge.png")  # a good file: reduced while decoding
    return expected
