"""The lake browser's pieces that need no engine: thumbnails and their cache, progress lines."""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest
from PIL import Image

from brain import progress
from brain.app.thumbnails import ThumbnailCache, placeholder


def test_thumbnails_fit_the_size_are_cached_and_bad_images_get_a_placeholder(tmp_path):
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(image)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    cache = ThumbnailCache("lake", tmp_path / "cache")
    data, ok = cache.png(str(image), "hash-1", 128)
    assert ok and Image.open(io.BytesIO(data)).size == (128, 64)  # 2× enlarged, aspect kept
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["hash-1-128.png"]
    image.unlink()
    assert cache.png(str(image), "hash-1", 128) == (data, True)  # from the cache
    for uri in (str(tmp_path / "broken.png"), str(tmp_path / "absent.png")):
        data, ok = cache.png(uri, None, 64)
        assert not ok and data == placeholder(64) and Image.open(io.BytesIO(data)).size == (64, 64)
    with pytest.raises(ValueError, match="thumbnail size must be one of"):
        cache.png(str(image), None, 100)


def test_progress_lines_have_counts_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="brain.progress")
    with progress.Progress("step", 10, "files", interval=0.0, terminal=False) as bar:
        for _ in range(4):
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"step: 1/10 files \(10%\), [\d.]+ files/s, ETA \d+ s", lines[0])
    assert re.fullmatch(r"step: 4/10 files \(40%\), [\d.]+ files/s, ETA \d+ s", lines[3])
    assert re.fullmatch(r"step: done, 4 files in [\d.]+ s \([\d.]+ files/s\)", lines[-1]) and len(lines) == 5
    assert list(progress.iterate(range(3), desc="it")) == [0, 1, 2]
