"""The guarded image decode: hostile files are refused with a reason, a hanging or crashing decoder costs one file."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from brain import images, ingest
from tests.hostile import big_png, write_hostile_folder


def test_each_hostile_file_is_one_error_with_its_reason(tmp_path):
    expected = write_hostile_folder(tmp_path, big=False)
    files = ingest.discover_folder(tmp_path)
    samples, errors = ingest.probe(files, dataset="d", run_id="r")
    reasons = dict(zip(errors["uri"].to_pylist(), errors["reason"].to_pylist()))
    assert set(reasons) == set(expected)
    for uri, words in expected.items():
        assert words in reasons[uri], (uri, reasons[uri])
        assert "\n" not in reasons[uri] and "\x1b" not in reasons[uri]
    assert samples.num_rows == 12 and {"cat", "dog", "café 猫"} == set(samples["label"].to_pylist())
    assert any("ü" in uri for uri in samples["uri"].to_pylist())


def test_decode_workers_in_parallel_give_the_rows_and_errors_of_one_worker(tmp_path):
    write_hostile_folder(tmp_path, big=False)
    files = ingest.discover_folder(tmp_path)
    one = ingest.probe(files, dataset="d", run_id="r")
    shared = ingest.probe(files, dataset="d", run_id="r", workers=3, parallel_min=2)
    for alone, parallel, clock in zip(one, shared, ("ingested_at", "recorded_at")):
        assert parallel.num_rows and parallel.drop([clock]).equals(alone.drop([clock]))


def test_a_big_png_is_reduced_while_decoding_and_keeps_its_declared_size(tmp_path):
    big_png(tmp_path / "big.png", side=5000)
    found = images.load_file(str(tmp_path / "big.png"), limits=images.DecodeLimits(max_side=512))
    assert (found.width, found.height) == (5000, 5000)
    assert found.pixels.shape == (512, 512, 3) and found.pixels.dtype == np.uint8
    assert abs(int(found.pixels[0, -1, 0]) - 255) <= 2 and found.pixels[0, :, 2].min() == 120  # the ramp survives
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(images.ImageError, match="cut.png: not a decodable image .*libpng read error"):
        images.load(str(tmp_path / "cut.png"), limits=images.DecodeLimits(max_side=512))
    jpeg = tmp_path / "big.jpg"
    Image.fromarray(np.full((3000, 2000, 3), 90, np.uint8)).save(jpeg)
    assert images.load(str(jpeg), limits=images.DecodeLimits(max_side=600)).shape == (600, 400, 3)


def test_caps_on_bytes_pixels_and_uris(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(path)
    with pytest.raises(images.ImageError, match=r"bytes, more than the 10 allowed \(images.max_bytes\)"):
        images.load(str(path), limits=images.DecodeLimits(max_bytes=10))
    with pytest.raises(images.ImageError, match=r"declares 30×40 = 1200 pixels, more than the 1000 allowed"):
        images.load(str(path), limits=images.DecodeLimits(max_pixels=1000))
    with pytest.raises(images.ImageError, match=r"http://example.com/a.png: cannot open a http:// URI"):
        images.load("http://example.com/a.png")
    assert images.load(path.as_uri()).shape == (40, 30, 3)


def sleepy_or_crashing(item: str) -> str:
    """Stands for a native decoder that hangs on one file and segfaults on another."""
    if item == "hang":
        time.sleep(60)
    if item == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if item == "bad":
        raise images.ImageError("bad: refused")
    return item.upper()


def test_a_hanging_or_crashing_decode_costs_one_item_and_the_rest_goes_on():
    items = ["a", "hang", "b", "segfault", "bad", "c"]
    started = time.perf_counter()
    out = images.run_isolated(sleepy_or_crashing, items, timeout_s=2.0, expected=images.ImageError,
                              failure=lambda item, why: images.ImageError(f"{item}: {why}"))
    assert time.perf_counter() - started < 30
    assert [o if isinstance(o, str) else type(o).__name__ for o in out] == \
        ["A", "ImageError", "B", "ImageError", "ImageError", "C"]
    assert "longer than 2 s" in str(out[1]) and "crashed on this file (signal SIGSEGV)" in str(out[3])
    assert str(out[4]) == "bad: refused"
    shared = images.run_isolated(sleepy_or_crashing, items, timeout_s=2.0, expected=images.ImageError,
                                 failure=lambda item, why: images.ImageError(f"{item}: {why}"), workers=3)
    assert [str(o) for o in shared] == [str(o) for o in out]
