"""Unique subset job: the n most spread samples of an embeddings run (k-center greedy) → `unique`.

    embeddings (this run, this dataset) → brain.methods.duplicates.find_unique (driver, NumPy)
      → (sample_id, rank) rows → one Delta commit

The greedy pass needs every vector in one process (N·D floats: 0.5 GB for 1M × 128).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.methods import duplicates as dup
from brain.vectors import to_matrix
from jobs.registry import Job

log = logging.getLogger("jobs.unique")


def read_vectors(lake: Lake, run_id: str) -> tuple[pa.Array, np.ndarray]:
    """(sample ids, [N, D] float32 vectors) of one embeddings run, all in this process."""
    table = lake.read("embeddings", columns=["sample_id", "vector"], filter=pc.field("run_id") == run_id)
    if table.num_rows == 0:
        raise ValueError(f"embeddings run {run_id} has no rows")
    ids = table["sample_id"].combine_chunks()
    return ids, to_matrix(table["vector"], ids, context=f"embeddings run {run_id}", dtype=np.float32)


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    cfg = conf.unique
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="unique", dataset=conf.dataset,
                    inputs={"embeddings": source["run_id"]}, config=conf.model_dump(), policy=conf.runs) as run:
        ids, vectors = read_vectors(lake, source["run_id"])
        mine = plain_strings(lake.read("samples", columns=["sample_id"],
                                       filter=pc.field("dataset") == conf.dataset))["sample_id"]
        keep = pc.is_in(pc.cast(ids, pa.string()), value_set=mine).to_numpy(zero_copy_only=False)
        ids, vectors = ids.filter(pa.array(keep)), vectors[keep]
        if cfg.n > len(ids):
            raise ValueError(f"unique.n={cfg.n} is more than the {len(ids)} embedded samples of {conf.dataset!r}")
        picked = dup.find_unique(vectors, cfg.n, metric=cfg.metric)
        run.write("unique", pa.table({
            "run_id": pa.array([run.run_id] * len(picked), pa.string()),
            "brain_key": pa.array([cfg.brain_key] * len(picked), pa.string()),
            "sample_id": ids.take(pa.array(picked)),
            "rank": pa.array(np.arange(len(picked), dtype=np.int32)),
        }))
    log.info("unique: %d of %d samples picked in %.1f s", cfg.n, len(ids), time.perf_counter() - started)
    return run.run_id


JOB = Job(name="unique", engine="driver", help="a unique (k-center) subset of n samples",
          reads=("embeddings", "samples"),
          writes=("unique",),
          run=run)


if __name__ == "__main__":
    JOB.main()
