"""Benchmark: the scan's full recomputes over a kNN graph, on Spark and in the driver's process, side by side.

Uniqueness (``jobs.uniqueness``) and near duplicates by an embedding threshold (``jobs.duplicates`` with
``duplicates.thresh``, no pixel verification) read the whole kNN graph of the dataset and do little work
per row: at 1M samples Spark's fixed costs (session, stages, shuffles) could outweigh it. The bench
runs each step on local Spark and with ``in_process=True`` over the same lake, each in a fresh
process (its driver peak RSS is its own ``ru_maxrss``; Spark's JVM is a child and not counted), and
checks the rows are identical.

The lake is built cheaply in this process (the real neighbors job on Ray would take most of the
bench's time): N vectors of dimension 32 with a power-law spectrum (axis std ∝ 1/√(i+1)) around
40 overlapping modes, plus 2% near copies of earlier vectors moved by a graded offset (0.02 to 0.5 of
the within-mode spread: some clearly duplicates, some as far as distinct samples), a samples table,
and the kNN graph (k = 10, FAISS IVF through ``brain.index.self_knn``) committed as a succeeded
``knn`` run. ``duplicates.thresh`` is the 18% quantile of all kNN distances, which keeps about 1.8
edges a sample (as ``thresh`` 0.001 did in ``bench/pipeline_scale.py`` at 1M).

    .venv/bin/python bench/inprocess_full_steps.py [--n 1000000] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATASET = "inproc"
K = 10
STEPS = ("uniqueness", "duplicates")
ENGINES = ("spark", "inprocess")


def make_vectors(n: int, *, dim: int = 32, modes: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))
    centers = rng.normal(size=(modes, dim)) * spectrum
    vectors = centers[rng.integers(0, modes, n)] + 1.2 * rng.normal(size=(n, dim)) * spectrum
    n_dup = n // 50
    originals = rng.choice(n - n_dup, n_dup, replace=False)
    offset = rng.normal(size=(n_dup, dim)) * spectrum * rng.uniform(0.02, 0.5, (n_dup, 1))
    vectors[n - n_dup:] = vectors[originals] + offset
    return vectors.astype(np.float32)


def build_lake(lake_path: Path, n: int) -> float:
    """Samples and a succeeded kNN run of N samples; returns the duplicates threshold."""
    from brain import index, runs
    from brain.lake import Lake
    from brain.schemas import SAMPLES

    lake = Lake(lake_path)
    ids = pa.array([hashlib.sha1(f"{DATASET}\0/data/img-{i:07d}.png".encode()).hexdigest()[:16] for i in range(n)],
                   pa.string())
    now = pa.scalar(dt.datetime.now(dt.timezone.utc), SAMPLES.field("ingested_at").type)
    columns = {"sample_id": ids, "dataset": pa.array([DATASET] * n, pa.string()),
               "uri": pc.binary_join_element_wise("/data/", ids, ".png", ""), "split": pa.array(["train"] * n),
               "label": pa.array(["x"] * n), "width": pa.array(np.full(n, 64, np.int32)),
               "height": pa.array(np.full(n, 64, np.int32)), "content_hash": ids,
               "size_bytes": pa.array(np.full(n, 4096, np.int64)), "attributes": pa.array(["{}"] * n),
               "ingested_at": pa.array([now.as_py()] * n, now.type)}
    lake.append("samples", pa.table([columns[f.name] for f in SAMPLES], schema=SAMPLES))
    t0 = time.perf_counter()
    dist, rows = index.self_knn(make_vectors(n), K, metric="cosine")
    print(f"  kNN of {n:,} vectors (FAISS, this process): {time.perf_counter() - t0:.1f} s", flush=True)
    offsets = pa.array(np.arange(0, n * K + 1, K, dtype=np.int32))
    neighbor_ids = pa.ListArray.from_arrays(offsets, ids.take(pa.array(rows.ravel())))
    distances = pa.ListArray.from_arrays(offsets, pa.array(dist.ravel(), pa.float32()))
    with runs.track(lake, brain_key="knn", method="neighbors", dataset=DATASET, config={"neighbors": {"k": K}}) as run:
        run.write("neighbors", pa.table({"run_id": pa.array([run.run_id] * n, pa.string()), "sample_id": ids,
                                         "neighbor_ids": neighbor_ids, "distances": distances}))
    return float(np.quantile(dist, 0.18))


def conf_for(lake_path: Path, thresh: float):
    from brain.config import load_conf

    return load_conf(overrides=[f"lake={lake_path}", f"dataset={DATASET}", f"duplicates.thresh={thresh}",
                                "spark.master=local[2]"])


def measure(step: str, engine: str, lake_path: Path, thresh: float) -> None:
    """One step on one engine in this (fresh) process: prints a JSON line with seconds, Spark's start and
    this process's peak RSS."""
    from jobs import duplicates, engines, uniqueness

    conf = conf_for(lake_path, thresh)
    conf.duplicates.brain_key = f"duplicates_{engine}"
    conf.uniqueness.brain_key = f"uniqueness_{engine}"
    spark_start_s = 0.0
    if engine == "spark":  # a scan's Spark is up before its full recomputes: the start is reported apart
        t0 = time.perf_counter()
        engines.spark_session(conf)
        spark_start_s = time.perf_counter() - t0
    job = {"uniqueness": uniqueness.run, "duplicates": duplicates.run}[step]
    t0 = time.perf_counter()
    run_id = job(conf, in_process=engine == "inprocess")
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "spark_start_s": spark_start_s, "run_id": run_id,
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def sorted_rows(lake, table: str, run_id: str, columns: list[str]) -> pa.Table:
    from brain.lake import plain_strings

    rows = plain_strings(lake.read(table, columns=columns, filter=pc.field("run_id") == run_id))
    return rows.sort_by([(c, "ascending") for c in columns])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the lake (its path is printed)")
    parser.add_argument("--measure", nargs=4, metavar=("STEP", "ENGINE", "LAKE", "THRESH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        step, engine, lake_path, thresh = args.measure
        measure(step, engine, Path(lake_path), float(thresh))
        return

    from brain.lake import Lake

    folder = Path(tempfile.mkdtemp(prefix="bench-inprocess-"))
    lake_path = folder / "lake"
    try:
        t0 = time.perf_counter()
        thresh = build_lake(lake_path, args.n)
        print(f"lake of {args.n:,} samples built in {time.perf_counter() - t0:.1f} s (thresh {thresh:.5f})",
              flush=True)
        found: dict[tuple[str, str], dict] = {}
        for step in STEPS:
            for engine in ENGINES:
                out = subprocess.run([sys.executable, __file__, "--measure", step, engine, str(lake_path),
                                      repr(thresh)], check=True, capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
                found[step, engine] = json.loads(out.stdout.strip().splitlines()[-1])
                r = found[step, engine]
                print(f"  {step:<10} {engine:<9} {r['seconds']:7.1f} s (Spark start {r['spark_start_s']:.1f} s "
                      f"apart)  driver peak {r['peak_gb']:.2f} GB", flush=True)
        lake = Lake(lake_path)
        uniq_cols = ["sample_id", "uniqueness"]
        dup_cols = ["group_id", "kept_sample_id", "sample_id", "distance"]
        uniq = [sorted_rows(lake, "uniqueness", found["uniqueness", e]["run_id"], uniq_cols) for e in ENGINES]
        dups = [sorted_rows(lake, "duplicates", found["duplicates", e]["run_id"], dup_cols) for e in ENGINES]
        identical = uniq[0].num_rows == args.n and uniq[0].equals(uniq[1]) and dups[0].num_rows > 0 and dups[0].equals(
            dups[1])
        print(f"uniqueness rows {uniq[0].num_rows:,}; duplicates rows {dups[0].num_rows:,} in "
              f"{len(pc.unique(dups[0]['group_id'])):,} groups; identical: {identical}")
        load = os.getloadavg()[0]
        print(f"RESULT n={args.n} uniqueness_spark_s={found['uniqueness', 'spark']['seconds']:.2f} "
              f"uniqueness_inprocess_s={found['uniqueness', 'inprocess']['seconds']:.2f} "
              f"duplicates_spark_s={found['duplicates', 'spark']['seconds']:.2f} "
              f"duplicates_inprocess_s={found['duplicates', 'inprocess']['seconds']:.2f} "
              f"identical={int(identical)} "
              f"driver_peak_gb={max(r['peak_gb'] for r in found.values()):.3f} "
              f"inprocess_driver_peak_gb={max(found[s, 'inprocess']['peak_gb'] for s in STEPS):.3f} "
              f"spark_driver_peak_gb={max(found[s, 'spark']['peak_gb'] for s in STEPS):.3f} "
              f"spark_start_s={found['uniqueness', 'spark']['spark_start_s']:.2f} load_avg={load:.2f}")
    finally:
        if args.keep:
            print(f"lake kept at {lake_path}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
