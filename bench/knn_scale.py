"""kNN graph at scale: the real neighbors job on Ray over a real embeddings Delta table, vs exact search
and scikit-learn brute force.

    .venv/bin/python bench/knn_scale.py [--n 250000 1000000] [--data realistic clustered] [--sklearn-n 100000]

Data (made here, written as an embeddings run of Delta files of 50,000 rows each):

* ``realistic``: D = 256, a Gaussian whose axis variances decay like a power law (axis i has
  variance ∝ 1/(i+1)), drawn around 300 broad modes whose centres have the same spectrum scaled
  by 0.8, so the modes overlap (no clean clusters): close to real image embeddings, where a
  fixed small nprobe misses many true neighbours.
* ``clustered``: D = 128, 1,000 well-separated Gaussian clusters (centre ~ N(0, I), spread 0.5):
  the easy case, where any IVF setting finds every neighbour.

For each (data, N) the job (``python -m jobs.neighbors``, a subprocess with its own local Ray,
2 CPUs, the default config: IVF above 50,000 vectors, nprobe tuned to recall 0.95) is timed end to
end; its run records the chosen nprobe, the driver's peak RSS and the largest shard actor's peak
RSS. Recall@10 is measured here on 2,000 random samples of the written graph against exact
search (FAISS brute force over the regenerated vectors). scikit-learn's brute-force
``NearestNeighbors`` (what FiftyOne Brain uses) and the job run on the same ``--sklearn-n``
realistic vectors, alternating (see ``versus_sklearn``): the ratio of wall times is the speed-up.
The machine may be shared: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brain import index, runs  # noqa: E402
from brain.config import load_conf  # noqa: E402
from brain.lake import Lake, plain_strings  # noqa: E402

FILE_ROWS = 50_000


def realistic(n: int, *, d: int = 256, modes: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, d + 1))).astype(np.float32)
    centres = rng.standard_normal((modes, d), dtype=np.float32) * scale * 0.8
    out = np.empty((n, d), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        out[a:b] = centres[rng.integers(0, modes, b - a)] + rng.standard_normal((b - a, d), np.float32) * scale
    return out


def clustered(n: int, *, d: int = 128, components: int = 1000, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, d), dtype=np.float32)
    out = np.empty((n, d), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        out[a:b] = centres[rng.integers(0, components, b - a)] + spread * rng.standard_normal((b - a, d), np.float32)
    return out


DATA = {"realistic": realistic, "clustered": clustered}


def sample_ids(a: int, b: int) -> pa.Array:
    return pa.array([f"s{i:08d}" for i in range(a, b)], pa.string())


def write_lake(root: Path, x: np.ndarray) -> Lake:
    lake = Lake(root)
    with runs.track(lake, brain_key="embeddings", method="embeddings", dataset="bench", config={}) as run:
        for a in range(0, len(x), FILE_ROWS):
            b = min(len(x), a + FILE_ROWS)
            flat = pa.array(x[a:b].reshape(-1))
            vectors = pa.ListArray.from_arrays(pa.array(np.arange(0, (b - a + 1) * x.shape[1], x.shape[1],
                                                                  dtype=np.int32)), flat)
            run.write("embeddings", pa.table({
                "run_id": pa.array([run.run_id] * (b - a)), "sample_id": sample_ids(a, b), "vector": vectors}))
    return lake


def run_job(lake: Lake, work: Path) -> tuple[float, dict[str, float]]:
    conf = load_conf()
    conf.lake, conf.dataset = lake.uri, "bench"
    path = work / "knn.yaml"
    path.write_text(yaml.safe_dump(conf.model_dump()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS="")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "jobs.neighbors", "--conf", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"neighbors job failed:\n{done.stderr[-4000:]}")
    return seconds, dict(runs.get_run(lake, "knn")["metrics"])


def graph_recall(lake: Lake, x: np.ndarray, *, k: int, queries: int) -> float:
    rows = np.sort(np.random.default_rng(1).choice(len(x), min(len(x), queries), replace=False))
    wanted = sample_ids(0, len(x)).take(pa.array(rows))
    run_id = runs.get_run(lake, "knn")["run_id"]
    graph = plain_strings(lake.read("neighbors", columns=["sample_id", "neighbor_ids"],
                                    filter=(pc.field("run_id") == run_id) & pc.field("sample_id").isin(wanted)))
    graph = graph.sort_by("sample_id")
    found = np.array([[int(s[1:]) for s in nbrs] for nbrs in graph["neighbor_ids"].to_pylist()])
    xn = index.prepare(x, metric="cosine")
    _, exact = index.drop_self(*faiss.knn(xn[rows], xn, k + 1), rows)
    return index.recall_at_k(found, exact)


def bench_one(name: str, n: int, work: Path, k: int, queries: int) -> dict[str, float]:
    x = DATA[name](n)
    lake = write_lake(work / f"{name}-{n}", x)
    del x  # the job reads the lake; the vectors are made again for the exact check
    seconds, metrics = run_job(lake, work)
    recall = graph_recall(lake, DATA[name](n), k=k, queries=queries)
    out = dict(seconds=seconds, recall=recall, nprobe=metrics["nprobe"], nlist=metrics["nlist"],
               job_recall=metrics.get("recall_at_k", float("nan")), driver_gb=metrics["driver_peak_rss_gb"],
               worker_gb=metrics["worker_peak_rss_gb"], cap_hit=metrics["recall_cap_hit"])
    print(f"{name} N={n}: {seconds:.1f} s wall, recall@{k} {recall:.4f} on {queries} queries (job's own check "
          f"{out['job_recall']:.4f}), nlist {out['nlist']:.0f}, chosen nprobe {out['nprobe']:.0f}, driver peak "
          f"{out['driver_gb']:.2f} GB, largest worker peak {out['worker_gb']:.2f} GB, load {os.getloadavg()[0]:.1f}",
          flush=True)
    return out


def versus_sklearn(m: int, work: Path, k: int, queries: int, repeats: int) -> dict[str, float]:
    """scikit-learn's brute-force graph of m realistic vectors vs the job on the same vectors.

    Brute force costs exactly m·m·D flops for the whole graph, linear in the queries: scikit-learn
    runs ``queries`` of the m rows against all m and its time is scaled by m / queries. The two
    sides alternate ``repeats`` times and each keeps its fastest run: on a shared machine the
    load changes within minutes, and the minimum is the run least slowed by others.
    """
    from sklearn.neighbors import NearestNeighbors

    x = realistic(m)
    lake = write_lake(work / f"sklearn-{m}", x)
    fitted = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine").fit(x)
    sk_times, our_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fitted.kneighbors(x[:queries])
        sk_times.append((time.perf_counter() - t0) * m / queries)
        our_times.append(run_job(lake, work)[0])
        print(f"realistic N={m}: scikit-learn brute force {sk_times[-1]:.1f} s ({queries} queries, scaled), "
              f"the job {our_times[-1]:.1f} s (with its Ray start), load {os.getloadavg()[0]:.1f}", flush=True)
    sk, ours = min(sk_times), min(our_times)
    return {f"sklearn_{m // 1000}k_s": sk, f"ours_{m // 1000}k_s": ours, f"speedup_{m // 1000}k": sk / ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[250_000, 1_000_000])
    parser.add_argument("--data", nargs="+", default=["realistic", "clustered"], choices=sorted(DATA))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--sklearn-n", type=int, default=100_000, help="0: skip the scikit-learn comparison")
    parser.add_argument("--sklearn-queries", type=int, default=10_000, help="rows scikit-learn searches (scaled up)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side; the fastest counts")
    args = parser.parse_args()
    if args.k != load_conf().neighbors.k:
        parser.error(f"--k must be the job's neighbors.k ({load_conf().neighbors.k})")

    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="knn-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        for name in args.data:
            for n in args.n:
                got = bench_one(name, n, work, args.k, args.queries)
                result.update({f"{name}_{n // 1000}k_{key}": value for key, value in got.items()})
        if len(args.n) > 1:
            lo, hi = min(args.n), max(args.n)
            for name in args.data:
                result[f"{name}_driver_ratio_{hi // 1000}k_vs_{lo // 1000}k"] = (
                    result[f"{name}_{hi // 1000}k_driver_gb"] / result[f"{name}_{lo // 1000}k_driver_gb"])
        if args.sklearn_n:
            result.update(versus_sklearn(args.sklearn_n, work, args.k, args.sklearn_queries, args.repeats))
    result["load_avg"] = os.getloadavg()[0]
    print("RESULT " + " ".join(f"{key}={value:.4g}" for key, value in result.items()))


if __name__ == "__main__":
    main()
