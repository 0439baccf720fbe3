"""Visualization job: 2-D or 3-D coordinates of an embeddings run's samples → `visualization`.

    a random sample of at most visualization.max_fit_samples rows → UMAP / PCA fit on the driver
      (brain.methods.visualization.fit_map); t-SNE only when every row fits in the sample
    → Ray tasks, one per shard of the embeddings table's Parquet files: rows of the fit sample keep
      their fitted coordinates, the others are placed with the fitted map's ``transform``
    → Parquet in staging → one Delta commit

The fitted map travels to the tasks through Ray's object store as a pickle made within this job
(never read from the lake). run.metrics records ``fit_samples`` and ``projected`` (rows placed by
``transform``).
"""

from __future__ import annotations

import logging
import pickle
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from brain import runs, vectors
from brain.config import Conf
from brain.lake import Lake
from brain.methods import visualization as viz
from jobs.registry import Job

log = logging.getLogger("jobs.visualization")


def read_files(files: list[str], run_id: str) -> pa.Table:
    """``sample_id``, ``vector`` of one run's rows in some of a table's Parquet files."""
    fs, first = pafs.FileSystem.from_uri(files[0] if "://" in files[0] else f"file://{files[0]}")
    paths = [first, *(pafs.FileSystem.from_uri(f if "://" in f else f"file://{f}")[1] for f in files[1:])]
    return pads.dataset(paths, filesystem=fs, format="parquet").to_table(
        columns=["sample_id", "vector"], filter=pc.field("run_id") == run_id)


def place_shard(model_blob: bytes | None, fit_ids: np.ndarray, fit_coords: np.ndarray, files: list[str], *,
                method: str, lake_uri: str, embeddings_run_id: str, run_id: str, brain_key: str) -> tuple[int, int]:
    """Coordinates of the run's rows in ``files``, staged to `visualization`; returns (rows, projected)."""
    if method == "umap":
        viz.import_umap()  # numba's on-disk cache on before the pickled UMAP imports umap
    table = read_files(files, embeddings_run_id)
    if table.num_rows == 0:
        return 0, 0
    ids = table.column("sample_id").to_numpy(zero_copy_only=False).astype(str)
    position = np.searchsorted(fit_ids, ids).clip(max=fit_ids.shape[0] - 1)
    in_fit = fit_ids[position] == ids
    coords = np.empty((ids.shape[0], fit_coords.shape[1]))
    coords[in_fit] = fit_coords[position[in_fit]]
    if not in_fit.all():
        if model_blob is None:
            raise ValueError(f"method={method!r} cannot place rows outside its fit sample")
        outside = table.filter(pa.array(~in_fit))
        coords[~in_fit] = pickle.loads(model_blob).transform(vectors.matrix(outside, embeddings_run_id))
    n = ids.shape[0]
    z = coords[:, 2] if coords.shape[1] == 3 else pa.nulls(n, pa.float64())
    Lake(lake_uri).stage("visualization", run_id, pa.table({
        "run_id": pa.array([run_id] * n, pa.string()), "brain_key": pa.array([brain_key] * n, pa.string()),
        "sample_id": table.column("sample_id"), "x": coords[:, 0], "y": coords[:, 1], "z": z}))
    return n, int((~in_fit).sum())


def run(conf: Conf) -> str:
    from jobs.engines import ray_init, ray_where, versions

    lake = Lake(conf.lake)
    cfg = conf.visualization
    source = vectors.resolve(lake, cfg.embeddings_key)
    rows = vectors.members(lake, source)
    if cfg.method == "tsne" and rows.num_rows > cfg.max_fit_samples:
        raise ValueError(f"visualization.method='tsne' cannot place rows it was not fit on, and "
                         f"{source.spec!r} has {rows.num_rows} samples > visualization.max_fit_samples="
                         f"{cfg.max_fit_samples}; use umap or pca, or raise max_fit_samples")
    ray = ray_init(conf)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="visualization", dataset=source.dataset,
                    inputs={"embeddings": source.run_id}, config=conf.model_dump(), policy=conf.runs,
                    engine_versions=versions("ray", "umap-learn", "scikit-learn"), executed_on=ray_where()) as run:
        chosen = vectors.sample(rows, cfg.max_fit_samples, seed=cfg.seed)
        fit_ids = chosen["sample_id"].combine_chunks()
        x = vectors.read_vectors(lake, source.run_id, fit_ids)
        if cfg.method == "tsne":
            model_blob, fit_coords = None, viz.compute_visualization(x, method="tsne", num_dims=cfg.num_dims,
                                                                     seed=cfg.seed)
        else:
            model, fit_coords = viz.fit_map(x, cfg.method, cfg.num_dims, cfg.seed, {})
            model_blob = pickle.dumps(model) if chosen.num_rows < rows.num_rows else None
        fit_seconds = time.perf_counter() - started
        files = lake.file_uris("embeddings")
        shards = [list(part) for part in np.array_split(np.asarray(files, dtype=object), cfg.shards) if len(part)]
        refs = [ray.put(model_blob), ray.put(fit_ids.to_numpy(zero_copy_only=False).astype(str)),
                ray.put(fit_coords)]
        task = ray.remote(place_shard).options(num_cpus=1)
        done = ray.get([task.remote(*refs, shard, method=cfg.method, lake_uri=lake.uri,
                                    embeddings_run_id=source.run_id, run_id=run.run_id, brain_key=cfg.brain_key)
                        for shard in shards])
        placed, projected = sum(n for n, _ in done), sum(p for _, p in done)
        staged = run.staged_rows("visualization")
        if not staged == placed == rows.num_rows:
            raise RuntimeError(f"visualization: {rows.num_rows} samples but {placed} placed and {staged} staged")
        run.metrics.update(fit_samples=float(chosen.num_rows), projected=float(projected),
                           fit_seconds=fit_seconds)
    log.info("visualization: %s to %d-D fit on %d of %d samples in %.1f s; %d placed by transform on %d Ray "
             "task(s) in %.1f s", cfg.method, cfg.num_dims, chosen.num_rows, rows.num_rows, fit_seconds, projected,
             len(shards), time.perf_counter() - started - fit_seconds)
    return run.run_id


JOB = Job(name="visualize", engine="ray", help="2-D/3-D map of embeddings (umap|tsne|pca) on Ray",
          reads=("embeddings",),
          writes=("visualization",),
          run=run)


if __name__ == "__main__":
    JOB.main()
