"""Unique subset after 1% new samples: the incremental path (brain.methods.duplicates.extend_unique, then the
greedy from the first changed step) against the k-center greedy over all vectors, side by side in one run.

    .venv/bin/python bench/unique_incremental.py [--n-samples 1000000] [--dim 128] [--picks 1000] [--new 0.01]

Data (made here, in memory): a Gaussian whose axis variances decay like a power law (axis i has variance
∝ 1/(i+1)) around 300 overlapping modes, cosine metric, as real image embeddings. Two kinds of new samples,
each 1% of N:

* ``iid``: drawn from the same distribution (new images like the old ones). Each new sample has about a
  1/N chance per step of being the farthest, so with M new samples a pick changes near step N/M at the
  latest (measured: step 25 of 1000): the greedy continues from there over all vectors.
* ``edits``: near-duplicates of existing samples (moved by 1% of the nearest-neighbour scale: re-encoded,
  resized copies); a copy of a sample near the frontier can still land beyond the radius (measured: the
  picks change at step 89).

Times are of the work after the previous run (its state is computed first, untimed): the greedy over all
N + M vectors as the job runs it in full (pruned with a guess from every 20th sample), the same greedy with
every pass over all samples (``unpruned_full_s``: the job before this change), and the incremental path
(with the previous run's radius as its pruning guess), in the same process. ``identical``: all give the
same picks. The machine may be shared: the load
average is printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brain.methods import duplicates


def embeddings_like(rng: np.random.Generator, count: int, centres: np.ndarray) -> np.ndarray:
    scale = (1.0 / np.sqrt(np.arange(1, centres.shape[1] + 1))).astype(np.float32)
    out = np.empty((count, centres.shape[1]), np.float32)
    for a in range(0, count, 100_000):
        b = min(count, a + 100_000)
        out[a:b] = centres[rng.integers(0, len(centres), b - a)] + rng.standard_normal((b - a, centres.shape[1]),
                                                                                       np.float32) * scale
    return out


def incremental(state: duplicates.UniqueState, every: np.ndarray, old: int, picks: np.ndarray,
                picks_n: int) -> tuple[np.ndarray, int]:
    """The job's path: check the new vectors; the old picks, or the greedy from the first changed step."""
    step, _ = duplicates.extend_unique(state, every[old:], metric="cosine")
    if step == picks_n + 1:
        return picks, step
    return duplicates.find_unique_state(every, picks_n, metric="cosine", leading=picks[:step - 1],
                                        radius_guess=state.radius * duplicates.RADIUS_SLACK)[0], step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--picks", type=int, default=1000)
    parser.add_argument("--new", type=float, default=0.01)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scale = (1.0 / np.sqrt(np.arange(1, args.dim + 1))).astype(np.float32)
    centres = rng.standard_normal((300, args.dim), dtype=np.float32) * scale * 0.8
    old = embeddings_like(rng, args.n_samples, centres)
    added = int(args.new * args.n_samples)
    started = time.perf_counter()
    picks, state = duplicates.find_unique_state(old, args.picks, metric="cosine")
    previous_s = time.perf_counter() - started
    print(f"previous run over {args.n_samples:,} × {args.dim}: {previous_s:.1f} s", flush=True)

    step_nn = np.sqrt(2 / args.dim) * np.linalg.norm(scale)  # the scale of nearest-neighbour distances
    new_kinds = {
        "iid": lambda: embeddings_like(rng, added, centres),
        "edits": lambda: (old[rng.integers(0, args.n_samples, added)]
                          + 0.01 * step_nn / np.sqrt(args.dim) * rng.standard_normal((added, args.dim), np.float32)),
    }
    result = {}
    for kind, make in new_kinds.items():
        every = np.vstack([old, make()])
        if kind == "iid":  # every pass over all samples, as before pruning (the greedy the job ran until now)
            started = time.perf_counter()
            unpruned = duplicates.find_unique_state(every, args.picks, metric="cosine", radius_guess=np.inf)[0]
            result["unpruned_full_s"] = f"{time.perf_counter() - started:.2f}"
        started = time.perf_counter()
        full = duplicates.find_unique(every, args.picks, metric="cosine")
        full_s = time.perf_counter() - started
        started = time.perf_counter()
        mine, step = incremental(state, every, args.n_samples, picks, args.picks)
        incremental_s = time.perf_counter() - started
        identical = int(np.array_equal(full, mine) and (kind != "iid" or np.array_equal(full, unpruned)))
        print(f"{kind}: full {full_s:.1f} s, incremental {incremental_s:.1f} s (resumed from step {step} of "
              f"{args.picks}), identical {identical}", flush=True)
        result |= {f"{kind}_full_s": f"{full_s:.2f}", f"{kind}_incremental_s": f"{incremental_s:.2f}",
                   f"{kind}_resumed_from_step": step, f"{kind}_identical": identical}
        del every
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"RESULT n_samples={args.n_samples} dim={args.dim} picks={args.picks} new={added} "
          + " ".join(f"{k}={v}" for k, v in result.items()) + f" load=\"{load}\"")


if __name__ == "__main__":
    main()
