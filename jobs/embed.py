"""Embedding job on Ray Data: decode in tasks, embed in a pool of actors, commit to `embeddings`.

    samples of the dataset (sample_id, uri), sorted and cut into shards of `embed.shard_size`
      → map_batches(decode_shard)               CPU tasks: read + decode + model.preprocess
      → map_batches(ModelActor, ActorPool)      the model stays loaded; 1 GPU per actor when present
      → one staged Parquet file per shard       invisible until the driver commits them
    Images that fail to decode become `ingest_errors` rows (stage "decode"); the rest is embedded.
    `embed.resume=true` continues an unfinished run with the same brain key: staged shards are kept.
    (The pipeline itself: jobs/model_pipeline.py.)
"""

from __future__ import annotations

import sys

import pyarrow.compute as pc

from brain.config import Conf
from brain.lake import Lake
from jobs.model_pipeline import PipelineSpec, model_kwargs, run_pipeline


def run(conf: Conf) -> str:
    lake = Lake(conf.lake)
    samples = lake.read("samples", columns=["sample_id", "uri"], filter=pc.field("dataset") == conf.dataset)
    if samples.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}: run `brain ingest` first")
    kwargs = model_kwargs(conf, conf.embed.model, conf.embed.batch_size)
    return run_pipeline(conf, PipelineSpec(
        table="embeddings", brain_key=conf.embed.brain_key, method="embeddings", items=samples,
        model_name=conf.embed.model, model_kwargs=kwargs, shard_size=conf.embed.shard_size, resume=conf.embed.resume,
        settings=dict(model=conf.embed.model, kwargs=kwargs, shard_size=conf.embed.shard_size)))


def main(argv: list[str] | None = None) -> int:
    from jobs._entry import job_main

    return job_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
