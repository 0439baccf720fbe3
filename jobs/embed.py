"""Embedding job on Ray Data: decode in tasks, embed in a pool of actors, commit to `embeddings`.

    samples of the run's view (dataset [+ embed.where], or a given subset)
      → from_arrow → repartition
      → map_batches(decode_batch)               CPU tasks: read + decode + model.preprocess
      → map_batches(EmbedActor, ActorPool)      the model stays loaded; 1 GPU per actor when present
      → write_parquet(staging)                  invisible until the driver commits it
    Images that fail to decode become `ingest_errors` rows (stage "decode"); the rest is embedded.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import images, runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.models import get_model, load_model
from brain.schemas import INGEST_ERRORS

log = logging.getLogger("jobs.embed")


def vectors_to_arrow(vectors: np.ndarray) -> pa.ListArray:
    """[N, D] float32 → list<float32> (the lake's vector type)."""
    n, d = vectors.shape
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)), values)


def decode_batch(batch: pa.Table, *, dataset: str, model_name: str | None, lake_uri: str,
                 run_id: str) -> dict[str, np.ndarray]:
    """Read and decode a batch of samples and apply the model's preprocessing."""
    import datetime as dt

    batch = plain_strings(batch)
    batch = batch.filter(pc.equal(batch["dataset"], dataset))
    model = get_model(model_name)
    ids, pixels, errors = [], [], []
    for sample_id, uri in zip(batch["sample_id"].to_pylist(), batch["uri"].to_pylist()):
        try:
            pixels.append(images.load(uri))
            ids.append(sample_id)
        except images.ImageError as err:
            errors.append(dict(run_id=run_id, dataset=dataset, uri=uri, stage="decode",
                               reason=f"sample {sample_id}: {err}", recorded_at=dt.datetime.now(dt.timezone.utc)))
    if errors:
        Lake(lake_uri).stage("ingest_errors", run_id, pa.Table.from_pylist(errors, schema=INGEST_ERRORS))
    return {"sample_id": np.array(ids, dtype=object), "pixels": model.preprocess(pixels)}


class EmbedActor:
    """Holds a loaded model for the life of the actor and embeds batches."""

    def __init__(self, model_name: str | None, run_id: str):
        self.model = load_model(model_name)
        self.run_id = run_id

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ids = batch["sample_id"]
        vectors = (self.model.embed(batch["pixels"]) if len(ids)
                   else np.zeros((0, self.model.embedding_dim or 1), np.float32))
        return pa.table({"run_id": pa.array([self.run_id] * len(ids), pa.string()),
                         "sample_id": pa.array(ids.tolist(), pa.string()),
                         "vector": vectors_to_arrow(vectors)})


def select_samples(lake: Lake, conf: Conf, sample_ids: list[str] | None = None) -> pa.Table:
    """(sample_id, uri, dataset) of the samples to embed: the run's view, or ``sample_ids`` within it."""
    from brain import sql

    predicate = runs.dataset_filter(conf.dataset, conf.embed.where)
    table = plain_strings(sql.query(lake, f"SELECT sample_id, uri, dataset FROM samples WHERE {predicate}"))
    if sample_ids is not None:
        table = table.filter(pc.is_in(table["sample_id"], pa.array(sample_ids, pa.string())))
    return table


def embed_in_process(lake: Lake, conf: Conf, samples: pa.Table, run_id: str) -> None:
    """Embed a (small) set of samples in this process, with the same functions the Ray job uses."""
    actor = EmbedActor(conf.embed.model, run_id)
    for start in range(0, samples.num_rows, conf.embed.batch_size):
        batch = decode_batch(samples.slice(start, conf.embed.batch_size), dataset=conf.dataset,
                             model_name=conf.embed.model, lake_uri=lake.uri, run_id=run_id)
        if len(batch["sample_id"]):
            lake.stage("embeddings", run_id, actor(batch))


def carry_forward(lake: Lake, from_run: str, to_run: str, keep: pa.Table) -> int:
    """Stage ``from_run``'s vectors and decode errors of the samples in ``keep`` as ``to_run``'s; returns vectors."""
    def moved(rows: pa.Table) -> pa.Table:
        return rows.set_column(rows.schema.get_field_index("run_id"), "run_id",
                               pa.array([to_run] * rows.num_rows, pa.string()))

    rows = plain_strings(lake.read("embeddings", filter=pc.field("run_id") == from_run))
    rows = rows.filter(pc.is_in(rows["sample_id"], keep["sample_id"]))
    if rows.num_rows:
        lake.stage("embeddings", to_run, moved(rows))
    errors = plain_strings(lake.read("ingest_errors", filter=pc.field("run_id") == from_run))
    errors = errors.filter(pc.is_in(errors["uri"], keep["uri"]))
    if errors.num_rows:
        lake.stage("ingest_errors", to_run, moved(errors))
    return rows.num_rows


def run(conf: Conf, *, sample_ids: list[str] | None = None, carry_from: str | None = None,
        in_process: bool = False) -> str:
    """Embed the dataset's samples (the config's view) as a new run under ``conf.embed.brain_key``.

    Incremental mode (what ``brain scan`` uses): embed only ``sample_ids`` and carry the
    vectors of every other sample of the view over from run ``carry_from``, so the new
    run is complete on its own and supersedes the old one in one commit. ``in_process``
    embeds in this process instead of on Ray (for a few hundred images, no Ray start).
    """
    from jobs.engines import versions

    lake = Lake(conf.lake)
    view = select_samples(lake, conf)
    if view.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}"
                         f"{' matching ' + conf.embed.where if conf.embed.where else ''}: run `brain ingest` first")
    todo = view if sample_ids is None else view.filter(pc.is_in(view["sample_id"], pa.array(sample_ids, pa.string())))
    started = time.perf_counter()
    if in_process:
        ray, executed_on, gpus = None, f"driver host={socket.gethostname()}", 0
    else:
        from jobs.engines import ray_init, ray_where

        ray = ray_init(conf)
        executed_on = ray_where()
        gpus = conf.ray.num_gpus_per_actor
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    with runs.track(lake, brain_key=conf.embed.brain_key, method="embeddings", dataset=conf.dataset,
                    config=conf.model_dump(), engine_versions=versions("ray", "numpy"), executed_on=executed_on,
                    sample_filter=runs.dataset_filter(conf.dataset, conf.embed.where)) as run:
        carried = 0
        if carry_from is not None:
            keep = view.filter(pc.invert(pc.is_in(view["sample_id"], todo["sample_id"])))
            carried = carry_forward(lake, carry_from, run.run_id, keep)
        if todo.num_rows and in_process:
            embed_in_process(lake, conf, todo, run.run_id)
        elif todo.num_rows:
            blocks = max(conf.ray.read_parallelism, math.ceil(todo.num_rows / conf.embed.batch_size))
            ds = (ray.data.from_arrow(todo)
                  .repartition(blocks)
                  .map_batches(decode_batch, batch_format="pyarrow", batch_size=conf.embed.batch_size,
                               fn_kwargs=dict(dataset=conf.dataset, model_name=conf.embed.model,
                                              lake_uri=lake.uri, run_id=run.run_id))
                  .map_batches(EmbedActor, fn_constructor_kwargs=dict(model_name=conf.embed.model, run_id=run.run_id),
                               compute=ray.data.ActorPoolStrategy(size=conf.ray.num_actors),
                               batch_size=conf.embed.batch_size, batch_format="numpy",
                               num_cpus=conf.ray.actor_num_cpus, num_gpus=gpus))
            ds.write_parquet(lake.staging_dir("embeddings", run.run_id))
        run.rows_written["embeddings"] = lake.commit_files("embeddings", run.run_id)
        run.rows_written["ingest_errors"] = lake.commit_files("ingest_errors", run.run_id)
        run.metrics["embedded"] = float(run.rows_written["embeddings"] - carried)
        run.metrics["carried"] = float(carried)
    log.info("embed: %d samples embedded, %d carried over (%d not decodable) in %.1f s with model %s on %s",
             run.rows_written["embeddings"] - carried, carried, run.rows_written["ingest_errors"],
             time.perf_counter() - started, conf.embed.model or "default", executed_on)
    return run.run_id


def main(argv: list[str] | None = None) -> int:
    from jobs._entry import job_main

    return job_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
