"""Uniqueness job on Spark: a kNN run's distances → `uniqueness` (math in brain.methods.uniqueness).

    neighbors (this run) ⋈ samples (this dataset) → raw score per sample (mapInArrow)
      → max over the dataset → normalised score (mapInArrow) → Parquet in staging → one Delta commit

A kNN run over a patch embeddings run scores boxes (FiftyOne's ``roi_field``): rows keyed by
(sample_id, patch_index) with the box's patch_label and patch_bbox, normalised over the run's boxes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.methods import uniqueness as uq
from brain.schemas import fields_of, schema_of
from brain.vectors import indexed_patches, patch_boxes, patch_ids, to_matrix
from jobs.registry import Job

log = logging.getLogger("jobs.uniqueness")


# The key of a scored row: a sample, or a box of it (null patch columns for whole images).
KEY = ("sample_id", "patch_index", "patch_label", "patch_bbox")
# What raw_scores yields: the weighted distance sum before normalisation.
RAW_SCORES = pa.schema([*fields_of("uniqueness", *KEY), pa.field("raw", pa.float64())])


def raw_scores(batches: Iterator[pa.RecordBatch], weights: Sequence[float]) -> Iterator[pa.RecordBatch]:
    """(KEY..., distances) batches → (KEY..., raw) batches."""
    for batch in batches:
        distances = batch.column("distances")
        if len(batch) == 0:
            continue
        dist = to_matrix(distances, batch.column("sample_id"), what="list of neighbour distances")
        raw = uq.weighted_knn_distance(dist, weights=weights)
        yield pa.RecordBatch.from_arrays([batch.column(name) for name in KEY] + [pa.array(raw)],
                                         names=[*KEY, "raw"])


def normalized(batches: Iterator[pa.RecordBatch], max_raw: float, run_id: str,
               brain_key: str) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        n = len(batch)
        yield pa.RecordBatch.from_arrays(
            [pa.array([run_id] * n, pa.string()), pa.array([brain_key] * n, pa.string()), batch.column("sample_id"),
             pa.array(uq.normalize(batch.column("raw").to_numpy(zero_copy_only=False), max_raw)),
             *(batch.column(name) for name in KEY[1:])],
            names=["run_id", "brain_key", "sample_id", "uniqueness", *KEY[1:]])


def score_in_process(lake: Lake, conf: Conf, neighbors_run: str, run_id: str, patch_run: str | None = None) -> pa.Table:
    """The same two passes (raw → max → normalised) over Arrow batches in this process (a scan's choice for
    small updates and for datasets of at most ``scan.in_process_rows`` samples). It reads the distances,
    not the neighbour ids: at 1M samples and k = 10, 40 MB of float32 and the sample ids."""
    cfg = conf.uniqueness
    nbr = plain_strings(lake.read("neighbors", columns=["sample_id", "patch_index", "distances"],
                                  filter=pc.field("run_id") == neighbors_run))
    ids = lake.read("samples", columns=["sample_id"], filter=pc.field("dataset") == conf.dataset)["sample_id"]
    nbr = nbr.filter(pc.is_in(nbr["sample_id"], ids))
    boxes = patch_boxes(lake, patch_run) if patch_run is not None else None
    at = None if boxes is None else pc.index_in(patch_ids(nbr["sample_id"], nbr["patch_index"]),
                                                patch_ids(boxes["sample_id"], boxes["patch_index"]))
    for field in fields_of("uniqueness", *KEY[2:]):
        nbr = nbr.append_column(field, pa.nulls(nbr.num_rows, field.type) if boxes is None
                                else boxes[field.name].take(at))
    if nbr.num_rows == 0:
        raise ValueError(f"kNN run {neighbors_run} has no rows for dataset {conf.dataset!r}")
    raw = pa.Table.from_batches(list(raw_scores(nbr.to_batches(), list(cfg.weights))))
    max_raw = float(pc.max(raw["raw"]).as_py())
    return pa.Table.from_batches(list(normalized(raw.to_batches(), max_raw, run_id, cfg.brain_key)))


def run(conf: Conf, *, in_process: bool = False) -> str:
    """Score the latest kNN run on Spark (or, ``in_process``, in this process without starting Spark)."""
    from jobs.engines import spark_session, spark_where

    lake = Lake.from_conf(conf)
    cfg = conf.uniqueness
    source = runs.latest_succeeded(lake, cfg.neighbors_key)
    patch_run = indexed_patches(lake, source)
    spark = None if in_process else spark_session(conf)
    started = time.perf_counter()
    weights = list(cfg.weights)
    executed_on = None if in_process else spark_where(spark)
    with runs.track(lake, brain_key=cfg.brain_key, method="uniqueness", dataset=conf.dataset,
                    inputs={"neighbors": source["run_id"]}, config=conf.model_dump(), policy=conf.runs,
                    executed_on=executed_on) as run:
        if in_process:
            run.write("uniqueness", score_in_process(lake, conf, source["run_id"], run.run_id, patch_run))
        else:
            _score_on_spark(spark, lake, conf, source["run_id"], run, weights, patch_run)
    log.info("uniqueness: %d samples scored on %s in %.1f s", run.rows_written["uniqueness"], executed_on or "driver",
             time.perf_counter() - started)
    return run.run_id


def _score_on_spark(spark, lake: Lake, conf: Conf, neighbors_run: str, run: runs.Run, weights: list[float],
                    patch_run: str | None) -> None:
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from jobs.spark_lake import read_table, write_staged

    key = conf.uniqueness.brain_key
    neighbors = read_table(spark, lake, "neighbors").where(F.col("run_id") == neighbors_run)
    samples = read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset).select("sample_id")
    scored = neighbors.join(samples, "sample_id")
    if patch_run is not None:
        boxes = (read_table(spark, lake, "patch_embeddings").where(F.col("run_id") == patch_run)
                 .select("sample_id", "patch_index", F.col("label").alias("patch_label"),
                         F.col("bbox").alias("patch_bbox")))
        scored = scored.join(boxes, ["sample_id", "patch_index"])
    else:
        scored = scored.select("*", *(F.lit(None).cast(f.dataType).alias(f.name)
                                      for f in from_arrow_schema(pa.schema(fields_of("uniqueness", *KEY[2:])))))
    raw = (scored.select(*KEY, "distances")
           .mapInArrow(lambda it: raw_scores(it, weights), from_arrow_schema(RAW_SCORES)).cache())
    max_raw = raw.agg(F.max("raw")).first()[0]
    if max_raw is None:
        raise ValueError(f"kNN run {neighbors_run} has no rows for dataset {conf.dataset!r}")
    run_id = run.run_id
    scores = raw.mapInArrow(lambda it: normalized(it, float(max_raw), run_id, key),
                            from_arrow_schema(schema_of("uniqueness")))
    write_staged(scores, run, "uniqueness")
    raw.unpersist()


JOB = Job(name="uniqueness", engine="spark", help="uniqueness on Spark",
          reads=("neighbors", "samples"),
          writes=("uniqueness",),
          run=run)


if __name__ == "__main__":
    JOB.main()
