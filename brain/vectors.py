"""An embeddings run's vectors for driver-side fits: which run, which samples, a bounded random sample.

A *vector set* names the samples of one embeddings run, optionally one split::

    SPEC = NAME[@SPLIT]

``NAME`` is an embeddings brain key (its newest succeeded run), else a dataset
name (the newest succeeded embeddings run of that dataset). ``@SPLIT`` keeps the
samples whose ``samples.split`` is ``SPLIT``. Examples: ``embeddings``,
``embeddings@train``, ``digits@test``.

Fits (density models, UMAP) run on the driver over at most ``max_rows`` rows
drawn at random (:func:`sample`): only those rows' vectors are read
(:func:`read_vectors`), so the driver's memory is bounded whatever the lake's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.lake import Lake, plain_strings


@dataclass(frozen=True)
class VectorSet:
    spec: str  # as given
    run_id: str  # the embeddings run
    brain_key: str
    dataset: str
    split: str | None


def resolve(lake: Lake, spec: str) -> VectorSet:
    """The embeddings run and split that ``spec`` (``NAME[@SPLIT]``) names; a clear error if none."""
    name, _, split = spec.partition("@")
    if not name:
        raise ValueError(f"vector set {spec!r} must look like EMBEDDINGS_KEY_OR_DATASET[@SPLIT]")
    catalog = runs.list_runs(lake)
    done = [r for r in reversed(catalog.to_pylist()) if r["current"]]
    by_key = [r for r in done if r["brain_key"] == name]
    if by_key and by_key[0]["method"] != "embeddings":
        raise ValueError(f"{name!r} is the brain key of a {by_key[0]['method']} run, not of an embeddings run")
    found = by_key or [r for r in done if r["method"] == "embeddings" and r["dataset"] == name]
    if not found:
        keys = sorted({r["brain_key"] for r in done if r["method"] == "embeddings"})
        datasets = sorted({r["dataset"] for r in done if r["method"] == "embeddings"})
        raise ValueError(f"{name!r} is neither an embeddings brain key {keys} nor an embedded dataset "
                         f"{datasets} in {lake.uri}")
    run = found[0]
    return VectorSet(spec, run["run_id"], run["brain_key"], run["dataset"], split or None)


def members(lake: Lake, vset: VectorSet) -> pa.Table:
    """``sample_id``, ``label``, ``split`` of the set's samples, ordered by ``sample_id``."""
    ids = plain_strings(lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == vset.run_id))
    if ids.num_rows == 0:
        raise ValueError(f"embeddings run {vset.run_id} ({vset.brain_key!r}) has no rows")
    samples = plain_strings(lake.read("samples", columns=["sample_id", "label", "split"]))
    rows = ids.join(samples, "sample_id", join_type="left outer")
    if vset.split is not None:
        kept = rows.filter(pc.equal(rows["split"], vset.split))
        if kept.num_rows == 0:
            splits = sorted({s for s in rows["split"].to_pylist() if s is not None})
            raise ValueError(f"{vset.spec!r}: no samples of split {vset.split!r} in embeddings run "
                             f"{vset.run_id}; its splits: {splits}")
        rows = kept
    return rows.sort_by("sample_id")


def sample(rows: pa.Table, max_rows: int, *, seed: int = 0) -> pa.Table:
    """At most ``max_rows`` of ``rows`` drawn at random without replacement, in their order."""
    if rows.num_rows <= max_rows:
        return rows
    chosen = np.sort(np.random.default_rng(seed).choice(rows.num_rows, size=max_rows, replace=False))
    return rows.take(pa.array(chosen))


def read_vectors(lake: Lake, run_id: str, sample_ids: pa.Array | list[str]) -> np.ndarray:
    """The vectors (N, D) of ``sample_ids`` in embeddings run ``run_id``, in that order."""
    wanted = pa.array(sample_ids, pa.string()) if isinstance(sample_ids, list) else sample_ids.cast(pa.string())
    table = plain_strings(lake.read("embeddings", columns=["sample_id", "vector"],
                                    filter=(pc.field("run_id") == run_id) & pc.field("sample_id").isin(wanted)))
    position = pc.index_in(wanted, table["sample_id"])
    if position.null_count:
        missing = wanted.filter(pc.is_null(position))[0]
        raise ValueError(f"embeddings run {run_id} has no vector for sample {missing}")
    return matrix(table.take(position), run_id)


def matrix(table: pa.Table | pa.RecordBatch, run_id: str) -> np.ndarray:
    """A table's ``vector`` column as (N, D) float64; errors name the sample with a bad vector."""
    vectors = table.column("vector")
    if isinstance(vectors, pa.ChunkedArray):
        vectors = vectors.combine_chunks()
    if len(vectors) == 0:
        return np.zeros((0, 0))
    ids = table.column("sample_id")
    if vectors.null_count:
        bad = int(np.flatnonzero(vectors.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"embeddings run {run_id}: sample {ids[bad]} has no vector")
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValueError(f"embeddings run {run_id}: sample {ids[bad]} has a vector of length {lengths[bad]}, "
                         f"others {lengths[0]}")
    x = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(lengths), lengths[0])
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        names = [str(ids[int(i)]) for i in bad[:5]]
        raise ValueError(f"embeddings run {run_id}: sample {names[0]} has NaN or infinite values in its vector"
                         + (f" ({bad.size} such samples: {names}...)" if bad.size > 1 else ""))
    return x
