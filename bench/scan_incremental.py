"""Benchmark: a full `brain scan` of a 20,000-image lake, then 1% new images and an incremental scan.

Each scan runs as its own process (`python -m jobs.scan --conf FILE`), as a scheduler runs it,
so both pay their own start-up. The full scan embeds on Ray Data, builds the kNN graph on Ray and
scores on Spark; the incremental one (200 new images) embeds them in-process, carries the other
vectors over, updates the graph and rescores without starting Ray or Spark.

    .venv/bin/python bench/scan_incremental.py [--images 20000] [--new-fraction 0.01] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_images(folder: Path, start: int, count: int, *, classes: int = 10, size: int = 32, seed: int = 0) -> None:
    """``count`` PNGs (a colour theme per class, a random texture each) numbered from ``start``."""
    rng = np.random.default_rng(seed + start)
    for i in range(start, start + count):
        c = i % classes
        base = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], float)
        img = np.clip(base + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"class{c}" / f"img-{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)


def timed_scan(conf_file: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "jobs.scan", "--conf", str(conf_file)], cwd=ROOT,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"scan failed:\n{out.stderr[-4000:]}")
    return took, out.stdout.strip().splitlines()[-2] if out.stdout.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake")
    args = parser.parse_args()

    from brain import runs
    from brain.config import load_conf
    from brain.lake import Lake

    work = Path(tempfile.mkdtemp(prefix="lakebrain-scan-bench-"))
    try:
        images = work / "images"
        t0 = time.perf_counter()
        write_images(images, 0, args.images)
        print(f"wrote {args.images} images in {time.perf_counter() - t0:.1f} s", flush=True)
        conf = load_conf(None, [f"lake={work / 'lake'}", "dataset=bench", f"ingest.source={images}"])
        conf_file = work / "scan.yaml"
        conf_file.write_text(yaml.safe_dump(conf.model_dump()))

        full_s, line = timed_scan(conf_file)
        print(f"full scan: {full_s:.1f} s  ({line})", flush=True)
        new = int(args.images * args.new_fraction)
        write_images(images, args.images, new, seed=1)
        incremental_s, line = timed_scan(conf_file)
        print(f"incremental scan ({new} new): {incremental_s:.1f} s  ({line})", flush=True)
        idle_s, line = timed_scan(conf_file)
        print(f"scan with nothing new: {idle_s:.1f} s  ({line})", flush=True)

        lake = Lake(conf.lake)
        for row in runs.list_runs(lake).to_pylist():
            print(f"  {row['brain_key']:<12} {row['status']:<10} {row['executed_on']:<40} {dict(row['metrics'])}")
        n = lake.read("uniqueness").num_rows
        if n != args.images + new:
            sys.exit(f"expected {args.images + new} uniqueness rows, found {n}")
        print(f"RESULT full_s={full_s:.2f} incremental_s={incremental_s:.2f} ratio={incremental_s / full_s:.3f} "
              f"idle_s={idle_s:.2f} images={args.images} new={new}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
