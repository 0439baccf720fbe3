"""Duplicates job on Spark: near-duplicate groups over a kNN run, or exact duplicates by content hash.

near (math in brain.methods.duplicates):
    neighbors (this run) → edges (sample, neighbour, distance ≤ t) within the dataset, each pair once
      → [verify] both images decoded, aligned correlation ≥ min_ncc (mapInArrow)
      → connected components by min-label propagation in Spark SQL, iterated until no label changes
      → one row per duplicate: kept = its group's lowest sample id, distance to its nearest member
exact:
    samples (this dataset) grouped by content_hash → groups of two or more, kept = lowest sample id

Rows go to `duplicates` (Parquet in staging, one Delta commit). With ``fraction`` the
threshold comes from the minimum spanning forest of the graph's short edges, on the
driver: edges longer than the (2·fraction)-quantile of nearest-neighbour distances
cannot matter (each sample's nearest edge is in the forest, so ⌈f·N⌉ forest edges
lie below that quantile) and are not collected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import images, runs
from brain.config import Conf
from brain.lake import Lake
from brain.methods import duplicates as dup
from brain.schemas import fields_of
from jobs.registry import Job

log = logging.getLogger("jobs.duplicates")


# Candidate pairs (sample ids a < b) and their embedding distance, as verified() yields them.
PAIRS = pa.schema([fields_of("duplicates", "sample_id")[0].with_name(end) for end in ("a", "b")]
                  + fields_of("duplicates", "distance"))


def verified(batches: Iterator[pa.RecordBatch], min_ncc: float) -> Iterator[pa.RecordBatch]:
    """(a, b, distance, uri_a, uri_b) → the pairs whose aligned correlation is ≥ min_ncc."""
    for batch in batches:
        cols = batch.to_pydict()
        keep = [dup.aligned_similarity(images.load(ua), images.load(ub)) >= min_ncc
                for ua, ub in zip(cols["uri_a"], cols["uri_b"])]
        yield batch.select(["a", "b", "distance"]).filter(pa.array(keep, pa.bool_()))


def components(spark, edges, max_iterations: int):
    """(id, label) for every node of the undirected ``edges`` (a, b): label = the component's least id."""
    from pyspark.sql import functions as F

    both = edges.select("a", "b").union(edges.select(F.col("b").alias("a"), F.col("a").alias("b"))).cache()
    labels = both.select(F.col("a").alias("id")).distinct().withColumn("label", F.col("id")).localCheckpoint()
    for rounds in range(1, max_iterations + 1):
        offered = (both.join(labels, both.b == labels.id).groupBy(both.a.alias("id"))
                   .agg(F.min("label").alias("offer")))
        new = (labels.join(offered, "id", "left")
               .select("id", F.least("label", F.coalesce("offer", "label")).alias("label"),
                       (F.col("offer") < F.col("label")).alias("changed")).localCheckpoint())
        changed = new.where("changed").count()
        labels = new.select("id", "label")
        if changed == 0:
            both.unpersist()
            log.info("duplicates: labels settled after %d rounds", rounds)
            return labels
    raise RuntimeError(f"label propagation did not settle in {max_iterations} rounds: raise "
                       "duplicates.max_iterations or lower the threshold")


def near_rows(spark, lake: Lake, conf: Conf, run_id: str, metrics: dict[str, float]):
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from jobs.spark_lake import read_table

    cfg = conf.duplicates
    source = runs.latest_succeeded(lake, cfg.neighbors_key)
    samples = read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset).select("sample_id", "uri")
    nbr = read_table(spark, lake, "neighbors").where(F.col("run_id") == source["run_id"]).join(
        samples.select("sample_id"), "sample_id")
    pairs = nbr.select(F.col("sample_id").alias("src"),
                       F.explode(F.arrays_zip("neighbor_ids", "distances")).alias("e")).select(
        "src", F.col("e.neighbor_ids").alias("dst"), F.col("e.distances").cast("double").alias("distance"))
    pairs = pairs.join(samples.select(F.col("sample_id").alias("dst")), "dst")
    thresh, verify = dup.resolve_threshold(thresh=cfg.thresh, fraction=cfg.fraction, verify=cfg.verify,
                                           candidate_thresh=cfg.candidate_thresh)
    if cfg.fraction is not None:
        thresh = fraction_threshold(nbr, pairs, cfg.fraction)
    metrics["thresh"] = thresh
    edges = (pairs.where(F.col("distance") <= thresh)
             .groupBy(F.least("src", "dst").alias("a"), F.greatest("src", "dst").alias("b"))
             .agg(F.min("distance").alias("distance")))
    if verify:
        uris = samples.select(F.col("sample_id").alias("a"), F.col("uri").alias("uri_a"))
        with_uris = edges.join(uris, "a").join(
            uris.select(F.col("a").alias("b"), F.col("uri_a").alias("uri_b")), "b")
        min_ncc = cfg.min_ncc
        edges = with_uris.select("a", "b", "distance", "uri_a", "uri_b").mapInArrow(
            lambda it: verified(it, min_ncc), from_arrow_schema(PAIRS))
    edges = edges.localCheckpoint()
    metrics["verified_pairs" if verify else "pairs"] = float(edges.count())
    labels = components(spark, edges, cfg.max_iterations)
    nearest = (edges.select(F.col("a").alias("id"), "distance")
               .union(edges.select(F.col("b").alias("id"), "distance")).groupBy("id")
               .agg(F.min("distance").alias("distance")))
    return (labels.where(F.col("id") != F.col("label")).join(nearest, "id")
            .select(F.lit("near").alias("method"), F.col("label").alias("group_id"),
                    F.col("label").alias("kept_sample_id"), F.col("id").alias("sample_id"), "distance"))


def fraction_threshold(nbr, pairs, fraction: float) -> float:
    """The spanning-forest threshold for ``fraction`` (module docstring), from the short edges only."""
    from pyspark.sql import functions as F

    n = nbr.count()
    cap = nbr.select(F.percentile_approx(F.col("distances")[0], min(1.0, 2 * fraction + 0.01), 10_000)).first()[0]
    short = pairs.where(F.col("distance") <= float(cap)).toArrow()
    names, index = np.unique(np.concatenate([short["src"].to_numpy(zero_copy_only=False),
                                             short["dst"].to_numpy(zero_copy_only=False)]), return_inverse=True)
    src, dst = index[:short.num_rows], index[short.num_rows:]
    # samples with no short edge are singletons: they only add to n
    return dup.threshold_for_fraction(max(n, len(names)), src, dst, short["distance"].to_numpy(), fraction)


def exact_rows(spark, lake: Lake, conf: Conf):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.spark_lake import read_table

    samples = read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset)
    missing = samples.where(F.col("content_hash").isNull() | (F.col("content_hash") == "")).select("sample_id").first()
    if missing is not None:
        raise ValueError(f"sample {missing[0]} has no content hash")
    kept = F.min("sample_id").over(Window.partitionBy("content_hash"))
    return (samples.select("sample_id", kept.alias("kept")).where(F.col("sample_id") != F.col("kept"))
            .select(F.lit("exact").alias("method"), F.col("kept").alias("group_id"),
                    F.col("kept").alias("kept_sample_id"), "sample_id", F.lit(0.0).alias("distance")))


def run(conf: Conf) -> str:
    from pyspark.sql import functions as F

    from jobs.engines import spark_session, spark_where, versions

    lake = Lake(conf.lake)
    cfg = conf.duplicates
    spark = spark_session(conf)
    started = time.perf_counter()
    inputs = {"neighbors": runs.latest_succeeded(lake, cfg.neighbors_key)["run_id"]} if cfg.method == "near" else {}
    with runs.track(lake, brain_key=cfg.brain_key, method=f"duplicates_{cfg.method}", dataset=conf.dataset,
                    inputs=inputs, config=conf.model_dump(), policy=conf.runs,
                    engine_versions=versions("pyspark", "numpy", "scipy"), executed_on=spark_where(spark)) as run:
        rows = (near_rows(spark, lake, conf, run.run_id, run.metrics) if cfg.method == "near"
                else exact_rows(spark, lake, conf))
        out = rows.select(F.lit(run.run_id).alias("run_id"), F.lit(cfg.brain_key).alias("brain_key"), "method",
                          "group_id", "kept_sample_id", "sample_id", "distance")
        out.write.mode("overwrite").parquet(run.stage_dir("duplicates"))
        groups = run.read_staged("duplicates", columns=["group_id"])
        run.metrics["groups"] = float(len(pc.unique(groups["group_id"])))
    log.info("duplicates (%s): %d duplicates in %d groups in %.1f s", cfg.method, run.rows_written["duplicates"],
             run.metrics["groups"], time.perf_counter() - started)
    return run.run_id


JOB = Job(name="duplicates", engine="spark", help="near or exact duplicate groups on Spark",
          reads=("neighbors", "samples"),
          writes=("duplicates",),
          run=run)


if __name__ == "__main__":
    JOB.main()
