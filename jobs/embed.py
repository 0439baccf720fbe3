"""Embedding job on Ray Data: decode in tasks, embed in a pool of actors, commit to `embeddings`.

    samples (Parquet files of the Delta table)
      → read_parquet → repartition
      → map_batches(decode_batch)               CPU tasks: read + decode + model.preprocess
      → map_batches(EmbedActor, ActorPool)      the model stays loaded; 1 GPU per actor when present
      → write_parquet(staging)                  invisible until the driver commits it
    Images that fail to decode become `ingest_errors` rows (stage "decode"); the rest is embedded.
"""

from __future__ import annotations

import logging
import math
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import images, runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.models import get_model, load_model
from brain.schemas import INGEST_ERRORS, SAMPLES

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


def run(conf: Conf) -> str:
    from jobs.engines import ray_init, ray_where, versions

    lake = Lake(conf.lake)
    samples = lake.read("samples", columns=["sample_id"], filter=pc.field("dataset") == conf.dataset)
    if samples.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}: run `brain ingest` first")
    ray = ray_init(conf)
    started = time.perf_counter()
    gpus = conf.ray.num_gpus_per_actor
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    with runs.track(lake, brain_key=conf.embed.brain_key, method="embeddings", dataset=conf.dataset,
                    config=conf.model_dump(), engine_versions=versions("ray", "numpy"),
                    executed_on=ray_where()) as run:
        blocks = max(conf.ray.read_parallelism, math.ceil(samples.num_rows / conf.embed.batch_size))
        columns = ["sample_id", "uri", "dataset"]
        ds = (ray.data.read_parquet(lake.file_uris("samples"), schema=pa.schema([SAMPLES.field(c) for c in columns]))
              .select_columns(columns)
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
    log.info("embed: %d samples embedded (%d not decodable) in %.1f s with model %s on %d actor(s), gpus/actor=%s",
             run.rows_written["embeddings"], run.rows_written["ingest_errors"], time.perf_counter() - started,
             conf.embed.model or "default", conf.ray.num_actors, gpus)
    return run.run_id


def main(argv: list[str] | None = None) -> int:
    from jobs._entry import job_main

    return job_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
