"""Benchmark: what hostile files cost — peak memory of a 12000×12000 PNG, and every bad file handled.

1. Big image, side by side, each in a fresh Python process that reports its own peak RSS
   (the interpreter and imports included, the same in both):
   * guarded: ``brain.images.load_file`` (libvips shrink-on-load to ``images.max_side``);
   * naive: ``PIL.Image.open(...).convert("RGB")`` as ingest decoded before (the full 432 MB of RGB).
2. Bad files: a folder of good images with one file of each hostile kind (a PNG declaring
   100000², a FIFO, a link to /dev/zero, a truncated PNG, an empty file, text named .jpg,
   the 12000² PNG as a good file) plus a manifest adding an ``http://`` uri and a repeated
   row, ingested with ``brain.ingest.probe`` (decode in the worker process): each bad input
   must be exactly one ``ingest_errors`` row, each good one a ``samples`` row.

    .venv/bin/python bench/hostile_input.py [--side 12000]

Last line: ``RESULT peak_mb=... naive_peak_mb=... memory_ratio=... bad_files=... expected_bad=... good_files=...``
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brain import ingest  # noqa: E402
from tests.hostile import big_png, write_hostile_folder  # noqa: E402

GUARDED = """
import json, resource, sys
from brain import images
found = images.load_file(sys.argv[1])
print(json.dumps(dict(peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, shape=found.pixels.shape)))
"""
NAIVE = """
import json, resource, sys
import numpy as np
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
with Image.open(sys.argv[1]) as img:
    pixels = np.asarray(img.convert("RGB"))
print(json.dumps(dict(peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, shape=pixels.shape)))
"""


def peak(script: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        tmp = Path(tmp)
        big = tmp / "big.png"
        big_png(big, side=args.side)
        guarded, naive = peak(GUARDED, big), peak(NAIVE, big)
        print(f"{args.side}² PNG ({big.stat().st_size / 1e6:.1f} MB on disk): guarded decode to {guarded['shape']} "
              f"peak {guarded['peak_mb']:.0f} MB; naive full decode {naive['shape']} peak {naive['peak_mb']:.0f} MB")

        folder = tmp / "images"
        expected = write_hostile_folder(folder)
        files = ingest.discover_folder(folder)
        good_uris = [f.uri for f in files if f.uri not in expected]
        manifest = tmp / "manifest.csv"
        rows = [f.uri for f in files] + ["http://example.com/cat.png", good_uris[0]]
        with open(manifest, "w", newline="") as f:
            csv.writer(f).writerows([["uri"], *([r] for r in rows)])
        started = time.perf_counter()
        samples, errors = ingest.probe(ingest.read_manifest(manifest, duplicate_uris="first"), dataset="bench",
                                       run_id="bench")
        took = time.perf_counter() - started
        expected_bad = len(expected) + 2  # + the http uri and the repeated row
        for uri, reason in zip(errors["uri"].to_pylist(), errors["reason"].to_pylist()):
            print(f"  refused {Path(uri).name if '://' not in uri else uri}: {reason[len(uri) + 2:][:110]}")
        print(f"ingest of {len(rows)} manifest rows: {samples.num_rows} samples, {errors.num_rows} error rows "
              f"in {took:.1f} s")
        ok = samples.num_rows == len(good_uris) and errors.num_rows == expected_bad
        print(f"RESULT peak_mb={guarded['peak_mb']:.0f} naive_peak_mb={naive['peak_mb']:.0f} "
              f"memory_ratio={naive['peak_mb'] / guarded['peak_mb']:.1f} bad_files={errors.num_rows} "
              f"expected_bad={expected_bad} good_files={samples.num_rows} all_handled={ok}")


if __name__ == "__main__":
    main()
