"""Embedding throughput: the Ray Data job against a plain single-process torch loop, same model.

Makes 20,000 random-texture 64×64 PNGs and a small CNN (saved as TorchScript, so both
sides load the very same file through ``brain.models``), ingests the PNGs, then embeds
them two ways with the same batch size and torch threads:

* plain: one process, ``images.load`` → ``model.preprocess`` → ``model.embed`` per batch;
* ray: ``jobs.embed.run`` (decode tasks → model actor → one staged file per shard → commit).

Start-up and steady state are reported apart. Start-up is the time until the first
embeddings exist: plain: model load + the first batch; ray: Ray start, actor start and
the first shard staged (the pipeline's first shard is one batch), read from the staged
files' modification times. Steady-state images/s counts the images after that over the
time after that.

    .venv/bin/python bench/embed_throughput.py [--n 20000] [--batch-size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_images(folder: Path, n: int, size: int = 64) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(16, size, size, 3), dtype=np.uint8)
    per_class = n // 4
    for i in range(n):
        sub = folder / f"c{i // per_class}"
        sub.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(base[i % 16] // 2 + noise).save(sub / f"img-{i:06d}.png", compress_level=1)


def make_model(path: Path) -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(64, 128, 3, 2, 1), nn.ReLU(), nn.Conv2d(128, 128, 3, 2, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    torch.jit.save(torch.jit.script(net), str(path))


def plain_loop(uris: list[str], model_path: str, *, batch_size: int, threads: int, warm: int):
    from brain import images
    from brain.models import load_model

    t0 = time.perf_counter()
    model = load_model(model_path, input_size=64, batch_size=batch_size, num_threads=threads)
    done, t_warm, out = 0, None, []
    for i in range(0, len(uris), batch_size):
        pixels = [images.load(u) for u in uris[i:i + batch_size]]
        out.append(model.embed(model.preprocess(pixels)))
        done += len(pixels)
        if t_warm is None and done >= warm:
            t_warm, n_warm = time.perf_counter(), done
    t_end = time.perf_counter()
    return np.concatenate(out), t_warm - t0, (done - n_warm) / (t_end - t_warm)


def ray_job(lake_path: str, model_path: str, *, batch_size: int, threads: int, shard_size: int):
    from brain.config import load_conf
    from brain.lake import Lake
    from jobs import embed

    conf = load_conf(overrides=[f"lake={lake_path}", "dataset=bench", f"embed.model={model_path}",
                                f"embed.batch_size={batch_size}", f"embed.shard_size={shard_size}",
                                f"models.num_threads={threads}", "models.input_size=64", "ray.num_cpus=2"])
    from jobs.engines import ray_init

    t0 = time.time()
    ray_init(conf)
    t_ray = time.time() - t0
    run_id = embed.run(conf)
    t_job = time.time() - t0
    lake = Lake(lake_path)
    import pyarrow.parquet as pq

    stamps = []
    for rel in lake.staged_files("embeddings", run_id):
        full = Path(lake.uri) / "embeddings" / rel
        stamps.append((full.stat().st_mtime, pq.read_metadata(full).num_rows))
    stamps.sort()
    print("shard files staged at (s after start, rows):", [(round(t - t0, 1), n) for t, n in stamps], flush=True)
    first_t, first_n = stamps[0]
    rest = sum(n for _, n in stamps[1:])
    return run_id, t_ray, first_t - t0, rest / (stamps[-1][0] - first_t), t_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from brain.config import load_conf
    from brain.lake import Lake
    from jobs import ingest
    from jobs.registry import setup_logging

    setup_logging()
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    t = time.perf_counter()
    make_images(work / "images", args.n)
    make_model(work / "cnn.pt")
    lake_path = str(work / "lake")
    ingest.run(load_conf(overrides=[f"lake={lake_path}", "dataset=bench", f"ingest.source={work / 'images'}",
                                    "ray.num_cpus=2"]))
    print(f"setup: {args.n} images + ingest in {time.perf_counter() - t:.1f} s", flush=True)

    samples = Lake(lake_path).read("samples", columns=["sample_id", "uri"]).sort_by("sample_id")
    uris = samples["uri"].to_pylist()
    vectors, plain_start, plain_ips = plain_loop(uris, str(work / "cnn.pt"), batch_size=args.batch_size,
                                                 threads=args.threads, warm=min(args.batch_size, args.shard_size))
    print(f"plain loop: start-up {plain_start:.2f} s, steady {plain_ips:.0f} images/s", flush=True)

    run_id, ray_init_s, ray_start, ray_ips, ray_total = ray_job(lake_path, str(work / "cnn.pt"), batch_size=args.batch_size,
                                                     threads=args.threads, shard_size=args.shard_size)
    print(f"ray job: start-up {ray_start:.2f} s (of which ray.init {ray_init_s:.2f} s), steady {ray_ips:.0f} images/s, whole job {ray_total:.1f} s "
          f"({args.n / ray_total:.0f} images/s overall)", flush=True)

    stored = Lake(lake_path).read("embeddings").sort_by("sample_id")
    same = np.allclose(np.stack(stored["vector"].to_numpy(zero_copy_only=False)), vectors, atol=1e-4)
    print(f"same vectors both ways: {same}; batch_size={args.batch_size} threads={args.threads} "
          f"shard_size={args.shard_size} cpus={os.cpu_count()}")
    print(f"RESULT ratio={ray_ips / plain_ips:.3f} ray_ips={ray_ips:.0f} plain_ips={plain_ips:.0f} "
          f"startup_s={ray_start:.2f} plain_startup_s={plain_start:.2f} ray_init_s={ray_init_s:.2f} ray_job_s={ray_total:.1f} n={args.n}")


if __name__ == "__main__":
    main()
