"""Visualization job: 2-D or 3-D coordinates of an embeddings run's samples → `visualization`.

    a random sample of at most visualization.max_fit_samples rows → UMAP / PCA fit on the driver
      (brain.methods.visualization.fit_map); t-SNE only when every row fits in the sample
    → Ray tasks, one per shard of the embeddings table's Parquet files: rows of the fit sample keep
      their fitted coordinates, the others are placed with the fitted map's ``transform``
    → Parquet in staging → one Delta commit

The fitted map travels to the tasks through Ray's object store as a pickle made within this job
(never read from the lake). run.metrics records ``fit_samples`` and ``projected`` (rows placed by
``transform``).

``visualization.where`` maps only the samples matching a SQL condition (FiftyOne's ``use_view``; the
run's sample filter records it). ``visualization.points`` registers coordinates computed elsewhere
(FiftyOne's ``points=``) as the run instead, on the driver: checked like register-embeddings'
vectors (known sample ids, none twice, finite, 2 or 3 values each).

``visualization.embeddings_key`` may name a patch embeddings run (FiftyOne's ``patches_field``): one
point per box, keyed by (sample_id, patch_index) with its patch_label and patch_bbox; ``where`` keeps
the boxes of the matching samples.
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
from jobs.registry import Job, Option

log = logging.getLogger("jobs.visualization")


def read_files(files: list[str], run_id: str, table: str = "embeddings") -> pa.Table:
    """``sample_id``, ``vector`` (and a patch's ``patch_index``, ``label``, ``bbox``) of one run's rows in some of
    a vectors table's Parquet files."""
    fs, first = pafs.FileSystem.from_uri(files[0] if "://" in files[0] else f"file://{files[0]}")
    paths = [first, *(pafs.FileSystem.from_uri(f if "://" in f else f"file://{f}")[1] for f in files[1:])]
    columns = ["sample_id", "vector"] + (["patch_index", "label", "bbox"] if table == vectors.PATCH_TABLE else [])
    return pads.dataset(paths, filesystem=fs, format="parquet").to_table(
        columns=columns, filter=pc.field("run_id") == run_id)


def place_shard(model_blob: bytes | None, fit_ids: np.ndarray, fit_coords: np.ndarray, subset: np.ndarray | None,
                files: list[str], *, method: str, lake_uri: str, embeddings_run_id: str, run_id: str,
                brain_key: str, table_name: str = "embeddings") -> tuple[int, int]:
    """Coordinates of the run's rows in ``files`` (only ``subset``'s samples when given), staged to
    `visualization`; returns (rows, projected). ``fit_ids`` are item ids (patch ids for patches)."""
    if method == "umap":
        viz.import_umap()  # numba's on-disk cache on before the pickled UMAP imports umap
    table = read_files(files, embeddings_run_id, table_name)
    if subset is not None:
        table = table.filter(pc.is_in(table["sample_id"], pa.array(subset, pa.string())))
    if table.num_rows == 0:
        return 0, 0
    ids = vectors.item_ids(table, table_name).to_numpy(zero_copy_only=False).astype(str)
    position = np.searchsorted(fit_ids, ids).clip(max=fit_ids.shape[0] - 1)
    in_fit = fit_ids[position] == ids
    coords = np.empty((ids.shape[0], fit_coords.shape[1]))
    coords[in_fit] = fit_coords[position[in_fit]]
    if not in_fit.all():
        if model_blob is None:
            raise ValueError(f"method={method!r} cannot place rows outside its fit sample")
        outside = table.filter(pa.array(~in_fit))
        coords[~in_fit] = pickle.loads(model_blob).transform(vectors.matrix(outside, embeddings_run_id))
    boxes = table.select(["patch_index", "label", "bbox"]) if table_name == vectors.PATCH_TABLE else None
    Lake(lake_uri).stage("visualization", run_id,
                         points_rows(run_id, brain_key, table.column("sample_id"), coords, boxes=boxes))
    return ids.shape[0], int((~in_fit).sum())


def points_rows(run_id: str, brain_key: str, sample_ids, coords: np.ndarray, *, boxes: pa.Table | None = None
                ) -> pa.Table:
    """Rows of `visualization` for [N, 2|3] coordinates; ``boxes`` (patch_index, label, bbox) for patch points."""
    n = coords.shape[0]
    z = coords[:, 2] if coords.shape[1] == 3 else pa.nulls(n, pa.float64())
    patch = {} if boxes is None else {"patch_index": boxes["patch_index"], "patch_label": boxes["label"],
                                      "patch_bbox": boxes["bbox"]}
    return pa.table({
        "run_id": pa.array([run_id] * n, pa.string()), "brain_key": pa.array([brain_key] * n, pa.string()),
        "sample_id": pa.array(sample_ids, pa.string()), "x": coords[:, 0].astype(np.float64),
        "y": coords[:, 1].astype(np.float64), "z": z, **patch})


def register_points(conf: Conf) -> str:
    """``visualization.points`` (coordinates computed elsewhere) as a visualization run of the dataset."""
    from brain import register, sql

    lake, cfg = Lake(conf.lake), conf.visualization
    ids, coords = register.read_vector_file(cfg.points, ids_path=cfg.points_ids, vector_column="points")
    if coords.shape[1] not in (2, 3):
        raise ValueError(f"{cfg.points}: points must have 2 or 3 coordinates each, got {coords.shape[1]}")
    view = runs.dataset_filter(conf.dataset, cfg.where)
    known = sql.query(lake, f"SELECT sample_id FROM samples WHERE {view}")["sample_id"].to_pylist()
    register.check_ids(ids, set(known), dataset=conf.dataset, what="the points")
    with runs.track(lake, brain_key=cfg.brain_key, method="visualization", dataset=conf.dataset,
                    config={**conf.model_dump(), "method": "precomputed"}, sample_filter=view,
                    policy=conf.runs) as run:
        run.write("visualization", points_rows(run.run_id, cfg.brain_key, ids, coords))
    return run.run_id


def subset_ids(lake: Lake, where: str) -> np.ndarray:
    """Sorted sample ids matching a SQL condition over samples."""
    from brain import sql

    try:
        ids = sql.query(lake, f"SELECT sample_id FROM samples WHERE {where}")["sample_id"].to_pylist()
    except ValueError as err:
        raise ValueError(f"visualization.where {where!r} is not a valid condition over samples: {err}") from None
    return np.sort(np.asarray(ids, dtype=str))


def run(conf: Conf) -> str:
    from jobs.engines import ray_get_with_progress, ray_init, ray_where, versions

    lake = Lake(conf.lake)
    cfg = conf.visualization
    if cfg.points:
        return register_points(conf)
    source = vectors.resolve(lake, cfg.embeddings_key, patches=True)
    rows = vectors.members(lake, source)
    subset = None
    if cfg.where:
        subset = subset_ids(lake, cfg.where)
        rows = rows.filter(pc.is_in(rows["sample_id"], pa.array(subset, pa.string())))
        if rows.num_rows == 0:
            raise ValueError(f"visualization.where {cfg.where!r}: no sample of {source.spec!r} matches")
    if cfg.method == "tsne" and rows.num_rows > cfg.max_fit_samples:
        raise ValueError(f"visualization.method='tsne' cannot place rows it was not fit on, and "
                         f"{source.spec!r} has {rows.num_rows} samples > visualization.max_fit_samples="
                         f"{cfg.max_fit_samples}; use umap or pca, or raise max_fit_samples")
    ray = ray_init(conf)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="visualization", dataset=source.dataset,
                    inputs={"embeddings": source.run_id}, config=conf.model_dump(), policy=conf.runs,
                    sample_filter=runs.dataset_filter(source.dataset, cfg.where) if cfg.where else None,
                    engine_versions=versions("ray", "umap-learn", "scikit-learn"), executed_on=ray_where()) as run:
        chosen = vectors.sample(rows, cfg.max_fit_samples, seed=cfg.seed)
        fit_ids = chosen["item_id"].combine_chunks()
        x = vectors.read_vectors(lake, source.run_id, fit_ids, table=source.table)
        if cfg.method == "tsne":
            model_blob, fit_coords = None, viz.compute_visualization(x, method="tsne", num_dims=cfg.num_dims,
                                                                     seed=cfg.seed)
        else:
            model, fit_coords = viz.fit_map(x, cfg.method, cfg.num_dims, cfg.seed, {})
            model_blob = pickle.dumps(model) if chosen.num_rows < rows.num_rows else None
        fit_seconds = time.perf_counter() - started
        files = lake.file_uris(source.table)
        shards = [list(part) for part in np.array_split(np.asarray(files, dtype=object), cfg.shards) if len(part)]
        refs = [ray.put(model_blob), ray.put(fit_ids.to_numpy(zero_copy_only=False).astype(str)),
                ray.put(fit_coords), ray.put(subset)]
        task = ray.remote(place_shard).options(num_cpus=1)
        done = ray_get_with_progress([task.remote(*refs, shard, method=cfg.method, lake_uri=lake.uri,
                                                  embeddings_run_id=source.run_id, run_id=run.run_id,
                                                  brain_key=cfg.brain_key, table_name=source.table)
                                      for shard in shards],
                                     desc="visualization: placing shards", unit="shards")
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
          run=run,
          options=(Option("--where", "visualization.where",
                          "SQL condition over samples: map only that subset (FiftyOne's use_view)"),
                   Option("--points", "visualization.points",
                          "register precomputed coordinates instead: .parquet (sample_id, points) "
                          "or .npy [N, 2|3] with --points-ids"),
                   Option("--points-ids", "visualization.points_ids",
                          "for .npy points: a text file, one sample id per line")))


if __name__ == "__main__":
    JOB.main()
