"""kNN graph at scale: our approximate job vs exact search and scikit-learn brute force.

    .venv/bin/python bench/knn_scale.py N [--k 10] [--sklearn-max 100000]

Data: N clustered 128-d vectors made here (a Gaussian mixture with 1,000 components:
centres ~ N(0, I), points = centre + 0.5·N(0, I)), cosine metric (the job's default).

"Ours" is the neighbors job's computation run in this process on one machine
(``brain.index.choose_spec`` → ``build_index`` → ``self_knn``: the same functions the Ray
job calls per shard), with the default index settings of ``conf/local.yaml``.
Recall@10 is measured against exact FAISS search on 2,000 random queries of the graph.
Peak memory is ``resource.getrusage`` ru_maxrss of this process plus its children,
taken right after our job (before the scikit-learn comparison runs).
scikit-learn's brute-force ``NearestNeighbors`` (what FiftyOne Brain uses) is timed on
min(N, sklearn_max) vectors, and ours again on the same vectors.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from brain import index
from brain.config import load_conf


def clustered(n: int, d: int = 128, components: int = 1000, spread: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, d), dtype=np.float32)
    out = np.empty((n, d), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        out[a:b] = centres[rng.integers(0, components, b - a)] + spread * rng.standard_normal((b - a, d), np.float32)
    return out


def peak_gb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return kb / 2**20


def ours(x: np.ndarray, k: int) -> tuple[float, np.ndarray, index.IndexSpec]:
    cfg = load_conf().neighbors
    t0, c0 = time.perf_counter(), time.process_time()
    spec = index.choose_spec(len(x), x.shape[1], metric=cfg.metric, kind=cfg.index, flat_threshold=cfg.flat_threshold,
                             nlist=cfg.nlist, nprobe=cfg.nprobe)
    _, ids = index.self_knn(x, k, metric=cfg.metric, spec=spec)
    print(f"ours: {len(x)} vectors: {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU "
          f"(all threads; the machine is shared, wall time depends on its load)", flush=True)
    return time.perf_counter() - t0, ids, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", type=int)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--sklearn-max", type=int, default=100_000)
    args = parser.parse_args()
    n, k = args.n, args.k

    x = clustered(n)
    seconds, ids, spec = ours(x, k)
    peak = peak_gb()
    print(f"ours: {n} vectors, k={k}, {spec} in {seconds:.1f} s, peak rss {peak:.2f} GB", flush=True)

    rows = np.random.default_rng(1).choice(n, min(n, args.queries), replace=False)
    _, exact = index.knn_graph(index.build_index(x, metric="cosine"), x[rows], rows, k, metric="cosine")
    recall = index.recall_at_k(ids[rows], exact)
    print(f"recall@{k} vs exact on {len(rows)} queries: {recall:.4f}", flush=True)
    del ids

    from sklearn.neighbors import NearestNeighbors

    m = min(n, args.sklearn_max)
    sub = x[:m]
    t0, c0 = time.perf_counter(), time.process_time()
    NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine").fit(sub).kneighbors(sub)
    sk = time.perf_counter() - t0
    print(f"scikit-learn: {m} vectors: {sk:.1f} s wall, {time.process_time() - c0:.1f} s CPU", flush=True)
    ours_m = seconds if m == n else ours(sub, k)[0]
    print(f"{m} vectors: scikit-learn brute force {sk:.1f} s, ours {ours_m:.1f} s", flush=True)
    print(f"RESULT n={n} seconds={seconds:.1f} recall={recall:.4f} peak_gb={peak:.2f} "
          f"sklearn_{m // 1000}k_s={sk:.1f} ours_{m // 1000}k_s={ours_m:.1f} speedup_{m // 1000}k={sk / ours_m:.1f}")


if __name__ == "__main__":
    main()
