"""Familiarity and visualization jobs at a larger scale than the tests, on local Ray and Spark.

Makes its own data: N vectors (D dims) from a mixture of C Gaussian clusters, written as a dataset
and a succeeded embeddings run in a temporary lake. Then times, each as a real job:

* familiarity: fit on a random max_fit_samples sample (driver), score all N rows on Spark;
* comparison: first half vs second half of the rows (cross-fitted, per class);
* visualization: UMAP (or --method) fit on max_fit_samples rows, the rest placed by Ray tasks.

    .venv/bin/python bench/familiarity_visualization.py [--rows 20000] [--dims 64] [--fit 5000]

Last line: ``RESULT key=value ...`` (seconds and rows per second).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brain import runs  # noqa: E402
from brain.lake import Lake  # noqa: E402
from tests.conftest import local_conf, write_embeddings_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--fit", type=int, default=5_000, help="max_fit_samples of both jobs")
    parser.add_argument("--method", default="umap", choices=["umap", "pca", "tsne"])
    args = parser.parse_args()

    from jobs import comparison, familiarity, visualization
    from jobs.registry import setup_logging

    setup_logging()

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(args.classes, args.dims))
    labels = rng.integers(args.classes, size=args.rows)
    x = centers[labels] + rng.normal(size=(args.rows, args.dims))
    splits = np.where(np.arange(args.rows) < args.rows // 2, "train", "test")
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(Path(tmp) / "lake")
        write_embeddings_run(lake, "bench", "embeddings", x, [str(v) for v in labels], splits.tolist())
        conf = local_conf(lake.uri)
        conf.familiarity.max_fit_samples = conf.visualization.max_fit_samples = args.fit
        conf.comparison.fit, conf.comparison.predict = "embeddings@train", "embeddings@test"
        conf.visualization.method = args.method
        timings = {}
        jobs = {"familiarity": familiarity, "comparison": comparison, "visualization": visualization}
        for name, job in jobs.items():
            started = time.perf_counter()
            job.run(conf)
            timings[name] = time.perf_counter() - started
        ratio = dict(runs.get_run(lake, "comparison")["metrics"])["ratio"]
    print(f"RESULT rows={args.rows} dims={args.dims} fit_samples={args.fit} method={args.method} "
          f"familiarity_s={timings['familiarity']:.1f} familiarity_rows_per_s={args.rows / timings['familiarity']:.0f} "
          f"comparison_s={timings['comparison']:.1f} comparison_ratio={ratio:.3f} "
          f"visualization_s={timings['visualization']:.1f} "
          f"visualization_rows_per_s={args.rows / timings['visualization']:.0f}")


if __name__ == "__main__":
    main()
