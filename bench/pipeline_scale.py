"""The whole pipeline at lake scale on one machine: where N images break or which stage dominates.

    .venv/bin/python bench/pipeline_scale.py N [--compare-cli] [--cache DIR] [--set KEY=VALUE ...]

Makes N small real-looking images once (cached under ``--cache``, default
``~/.cache/lakebrain-bench``): 64×64 crops of the photos that ship with scikit-image and
scikit-learn, at random positions and scales, jittered in brightness, contrast and noise,
some mirrored; one label per photo; 80% ``train``, 20% ``test``. 2% are near-duplicates of
another image made by a geometric edit (a shift of a few pixels and a rescale, or a
mirror and a shift), a quarter of them across the splits (leaks). A further 1% of N, made the
same way, are the new files of the scan. The embedding model is a small CNN saved as
TorchScript by the bench (no weights to download), 128-d.

Then, through the real jobs on the local engines in one process (one Ray, one Spark session):
ingest → embed → neighbors → uniqueness → duplicates → unique → leaks; then the 1% new files
are copied into the source and ``jobs.scan`` runs (every run marked ``scan.rerun=follow``, so it
refreshes every table: embeddings and kNN incrementally, the rest in full). Per stage it prints wall time, rows per
second, the driver's peak RSS during the stage, the engines' RSS (every process started under
this one: Ray's head, workers and actors, Spark's JVM and Python workers) and the share of the
stage spent starting engines (the first stage to need Ray or Spark starts it; ``engines``
is reported as its own line).

``--set`` adds config overrides to every run (e.g. ``duplicates.thresh=0.02``: duplicates by
embedding distance, FiftyOne's definition, instead of pixel verification).

``--compare-cli`` runs the same seven steps again as separate ``brain`` commands into a
second lake (before the scan, on the same files) and compares each table's row count and every
sample's top-10 neighbours.

Last line: ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZE = 64
STEPS = ("ingest", "embed", "neighbors", "uniqueness", "duplicates", "unique", "leaks")


# -- data ------------------------------------------------------------------------------------
def photos() -> dict[str, np.ndarray]:
    """The offline sample photos, RGB uint8, by name (the label)."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    found = {name: getattr(sk, name)() for name in (
        "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
        "camera", "moon", "brick", "grass", "gravel")}
    for name, image in zip(("china", "flower"), load_sample_images().images):
        found[name] = image
    return {name: np.stack([im] * 3, axis=-1) if im.ndim == 2 else im[..., :3] for name, im in found.items()}


def crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (10–60% of the short side), resized to 64×64, jittered."""
    from PIL import Image

    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.1, 0.6))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    image = np.asarray(Image.fromarray(photo[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BILINEAR),
                       np.float32)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    image = image * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25) + rng.normal(0, rng.uniform(1, 8), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def geometric_edit(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near-duplicate: shifted by a few pixels and rescaled by a few percent (or mirrored), re-noised."""
    from PIL import Image

    out = Image.fromarray(image)
    if rng.random() < 0.3:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    scale = rng.uniform(1.02, 1.12)
    big = out.resize((round(SIZE * scale),) * 2, Image.BILINEAR)
    dy, dx = rng.integers(0, big.size[0] - SIZE + 1, 2)
    edited = np.asarray(big.crop((dx, dy, dx + SIZE, dy + SIZE)), np.float32) + rng.normal(0, 2, (SIZE, SIZE, 3))
    return np.clip(edited, 0, 255).astype(np.uint8)


def _write_chunk(args: tuple[str, int, int, int]) -> int:
    """Images [a, b) of the set ``seed``; image i's content depends only on (seed, i)."""
    from PIL import Image

    root, seed, a, b = args
    library = photos()
    names = sorted(library)
    for i in range(a, b):
        rng = np.random.default_rng([seed, i])
        split = "train" if rng.random() < 0.8 else "test"
        if i >= 50 and rng.random() < 0.02:  # a near-duplicate of an earlier image of this set
            j = int(rng.integers(0, i))
            source_rng = np.random.default_rng([seed, j])
            source_split = "train" if source_rng.random() < 0.8 else "test"
            label = names[int(source_rng.integers(len(names)))]
            image = geometric_edit(crop(library[label], source_rng), rng)
            split = source_split if rng.random() < 0.75 else ("test" if source_split == "train" else "train")
        else:
            label = names[int(rng.integers(len(names)))]
            image = crop(library[label], rng)
        folder = Path(root) / split / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"s{seed}-{i:08d}.png", compress_level=1)
    return b - a


def make_images(root: Path, n: int, seed: int) -> float:
    """N images under root (written once: a ``.complete`` marker makes it a cache); seconds taken."""
    if (root / ".complete").exists():
        return 0.0
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    chunk = 5000
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_chunk, [(str(root), seed, a, min(n, a + chunk)) for a in range(0, n, chunk)]))
    (root / ".complete").write_text(str(n))
    return time.perf_counter() - t0


def make_model(path: Path) -> None:
    """A small CNN (random weights, fixed seed), 128-d output, saved as TorchScript."""
    if path.exists():
        return
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Conv2d(128, 128, 3, 2, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    partial = path.with_suffix(".tmp")
    torch.jit.save(torch.jit.script(net), str(partial))
    partial.replace(path)


# -- measuring -------------------------------------------------------------------------------
class MemoryWatch:
    """Peak RSS of this process and of every process under it (the engines), sampled every 0.2 s."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.driver = self.engines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _engines_rss(self) -> int:
        import psutil

        total = 0
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # ended between the listing and the read
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self.driver = max(self.driver, self.me.memory_info().rss)
            self.engines = max(self.engines, self._engines_rss())

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.driver = max(self.driver, self.me.memory_info().rss)


def conf_for(lake: Path, source: Path, model: Path, n: int, extra: list[str]):
    from brain.config import load_conf

    return load_conf(overrides=overrides(lake, source, model, n) + extra)


def overrides(lake: Path, source: Path, model: Path, n: int) -> list[str]:
    # The CNN's random features put unrelated crops near each other (median nearest distance 0.003,
    # every one of the 10 neighbours within 0.02 at 100k): its distances say nothing, so the
    # candidates for pixel verification come from the blurred-thumbnail kNN alone.
    # Every run follows the scan (scan.rerun=follow), so the 1% scan refreshes every table.
    # The unique subset is a review set of 1% of N, at most 1,000: k-center greedy costs n·N·D.
    return [f"lake={lake}", "dataset=scale", f"ingest.source={source}", f"embed.model={model}",
            "models.input_size=64", "embed.batch_size=256", "duplicates.candidate_thresh=0",
            f"unique.n={min(1000, max(100, n // 100))}", "scan.rerun=follow"]


def run_steps(conf, gb: float) -> tuple[list[dict], dict]:
    """The seven steps in this process; per step: seconds, engine start seconds, peak RSS (GB)."""
    from jobs import duplicates, embed, engines, ingest, leaks, neighbors, unique, uniqueness

    jobs = dict(ingest=ingest.run, embed=embed.run, neighbors=neighbors.run, uniqueness=uniqueness.run,
                duplicates=duplicates.run, unique=unique.run, leaks=leaks.run)
    rows, started = [], {}
    for name in STEPS:
        with MemoryWatch() as memory:
            t0 = time.perf_counter()
            start_s = 0.0
            if name == "embed" and "ray" not in started:  # the first stage on Ray starts it
                engines.ray_init(conf)
                started["ray"] = start_s = time.perf_counter() - t0
            if name == "uniqueness" and "spark" not in started:
                engines.spark_session(conf)
                started["spark"] = start_s = time.perf_counter() - t0
            jobs[name](conf)
            seconds = time.perf_counter() - t0
        rows.append(dict(step=name, seconds=seconds, start_s=start_s, driver_gb=memory.driver / gb,
                         engines_gb=memory.engines / gb))
        print(f"  {name:<11} {seconds:8.1f} s  engine start {start_s:5.1f} s  driver peak "
              f"{memory.driver / gb:5.2f} GB  engines {memory.engines / gb:5.2f} GB", flush=True)
    return rows, started


def scan(conf, source: Path, new_images: Path, gb: float) -> dict:
    """Copy the 1% new files into the source and run the scan; its seconds and peak RSS."""
    from jobs import scan as scan_job

    for path in new_images.rglob("*.png"):
        target = source / path.relative_to(new_images)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    with MemoryWatch() as memory:
        t0 = time.perf_counter()
        scan_job.run(conf)
        seconds = time.perf_counter() - t0
    print(f"  scan (+{sum(1 for _ in new_images.rglob('*.png'))} files) {seconds:8.1f} s  driver peak "
          f"{memory.driver / gb:5.2f} GB  engines {memory.engines / gb:5.2f} GB", flush=True)
    return dict(seconds=seconds, driver_gb=memory.driver / gb, engines_gb=memory.engines / gb)


def table_counts(lake: Path) -> dict[str, int]:
    from brain import sql
    from brain.lake import Lake

    return {t: sql.query(Lake(str(lake)), f'SELECT count(*) AS n FROM "{t}"').column("n")[0].as_py()
            for t in ("samples", "embeddings", "neighbors", "uniqueness", "duplicates", "unique", "leaks")}


def top10(lake: Path) -> dict[str, list[str]]:
    from brain import sql
    from brain.lake import Lake

    graph = sql.query(Lake(str(lake)), "SELECT sample_id, neighbor_ids FROM neighbors")
    return dict(zip(graph["sample_id"].to_pylist(), graph["neighbor_ids"].to_pylist()))


def compare_cli(work: Path, source: Path, model: Path, n: int, lake: Path, extra: list[str]) -> dict[str, float]:
    """The seven steps as separate `brain` commands into another lake; the same counts and top-10 lists?"""
    cli_lake = work / "lake-cli"
    brain = str(Path(sys.executable).with_name("brain"))
    t0 = time.perf_counter()
    for name in STEPS:
        verb = name.replace("_", "-")
        args = [brain, verb, *sum((["--set", o] for o in overrides(cli_lake, source, model, n) + extra), [])]
        subprocess.run(args, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    ours, theirs = table_counts(lake), table_counts(cli_lake)
    a, b = top10(lake), top10(cli_lake)
    same_lists = np.mean([a[s] == b.get(s) for s in a])
    print(f"  separate CLI steps: {seconds:.1f} s; row counts {ours} vs {theirs}; identical top-10 lists "
          f"{same_lists:.4f}", flush=True)
    return dict(cli_seconds=seconds, counts_equal=float(ours == theirs), top10_identical=float(same_lists))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int)
    parser.add_argument("--cache", default=os.environ.get("BENCH_CACHE", str(Path.home() / ".cache/lakebrain-bench")))
    parser.add_argument("--compare-cli", action="store_true")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from jobs.engines import stop_engines
    from jobs.registry import setup_logging

    setup_logging()
    cache = Path(args.cache)
    images, new_images = cache / f"pipeline-{args.n}", cache / f"pipeline-{args.n}-new"
    made = make_images(images, args.n, seed=1) + make_images(new_images, max(1, args.n // 100), seed=2)
    model = cache / "cnn128.pt"
    make_model(model)
    print(f"data: {args.n} images (+{args.n // 100} new) under {cache} ({made:.0f} s to make; 0: cached)", flush=True)

    gb = 1024 ** 3
    with tempfile.TemporaryDirectory(prefix="pipeline-scale-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        source = work / "source"
        # hard links (the bench never changes a file): the scan adds its new files here
        shutil.copytree(images, source, ignore=shutil.ignore_patterns(".complete"), copy_function=os.link)
        lake = work / "lake"
        conf = conf_for(lake, source, model, args.n, args.extra)
        t0 = time.perf_counter()
        steps, started = run_steps(conf, gb)
        pipeline_s = time.perf_counter() - t0
        compared = compare_cli(work, source, model, args.n, lake, args.extra) if args.compare_cli else {}
        scanned = scan(conf, source, new_images, gb)
        stop_engines()
        result: dict[str, float] = {"n": args.n, "pipeline_s": pipeline_s, "scan_s": scanned["seconds"],
                                    "scan_share": scanned["seconds"] / pipeline_s,
                                    "driver_peak_gb": max(s["driver_gb"] for s in steps + [scanned]),
                                    "engines_peak_gb": max(s["engines_gb"] for s in steps + [scanned]),
                                    "engine_start_share": sum(started.values()) / pipeline_s}
        for s in steps:
            result[f"{s['step']}_s"] = s["seconds"]
            result[f"{s['step']}_rows_per_s"] = args.n / s["seconds"]
        slowest = max(steps, key=lambda s: s["seconds"])
        print(f"pipeline {pipeline_s:.1f} s (slowest stage: {slowest['step']} {slowest['seconds']:.1f} s), "
              f"scan of 1% new {scanned['seconds']:.1f} s ({result['scan_share']:.1%} of the pipeline), "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        result.update(compared)
        result["load_avg"] = os.getloadavg()[0]
        print(json.dumps({k: round(v, 4) for k, v in result.items()}))
    print("RESULT " + " ".join(f"{key}={value:.4g}" for key, value in result.items()))


if __name__ == "__main__":
    main()
