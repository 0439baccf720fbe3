"""Leaks job on Spark: duplicates whose members sit in different splits → `leaks`.

    duplicates (this run, distance ≤ leaks.thresh when set) ⋈ samples (the split of the duplicate
      and of its kept sample: the samples column or attributes field ``split_field``, or the
      explicit lists ``splits: {name: [sample ids]}``)
      → rows where both splits are among those compared and differ → Parquet in staging → one Delta commit
      → a count per split pair (sorted names joined by '|') in the run's metrics, e.g. leaks:test|train

``splits: [train, test]`` compares only those values of ``split_field``; null compares every value
(a sample without a split counts as the split '').
Duplicates over patches give leaks between boxes: their rows keep patch_index and kept_patch_index.
"""

from __future__ import annotations

import logging
import time

from brain import runs
from brain.config import Conf, LeaksConf
from brain.lake import Lake
from jobs.registry import Job

log = logging.getLogger("jobs.leaks")


def split_of_samples(spark, samples, cfg: LeaksConf):
    """(sample_id, split) of the samples compared, from ``split_field`` or the explicit lists."""
    from pyspark.sql import functions as F

    if isinstance(cfg.splits, dict):
        rows = [(sample_id, name) for name, ids in cfg.splits.items() for sample_id in ids]
        seen: dict[str, str] = {}
        for sample_id, name in rows:
            if seen.setdefault(sample_id, name) != name:
                raise ValueError(f"leaks.splits lists sample {sample_id} in both {seen[sample_id]!r} and {name!r}")
        listed = spark.createDataFrame(rows, "sample_id string, split string")
        return samples.select("sample_id").join(listed, "sample_id")
    if cfg.split_field.startswith("attributes."):
        field = cfg.split_field[len("attributes."):]
        split = F.get_json_object("attributes", f"$.{field}")
    elif cfg.split_field in samples.columns:
        split = F.col(cfg.split_field).cast("string")
    else:
        raise ValueError(f"leaks.split_field {cfg.split_field!r} is neither a samples column "
                         f"({', '.join(samples.columns)}) nor attributes.FIELD")
    out = samples.select("sample_id", F.coalesce(split, F.lit("")).alias("split"))
    return out.where(F.col("split").isin(cfg.splits)) if cfg.splits is not None else out


def run(conf: Conf) -> str:
    from pyspark.sql import functions as F

    from jobs.engines import spark_session, spark_where, versions
    from jobs.spark_lake import read_table

    lake = Lake(conf.lake)
    cfg = conf.leaks
    source = runs.latest_succeeded(lake, cfg.duplicates_key)
    spark = spark_session(conf)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="leaks", dataset=conf.dataset,
                    inputs={"duplicates": source["run_id"]}, config=conf.model_dump(), policy=conf.runs,
                    engine_versions=versions("pyspark"), executed_on=spark_where(spark)) as run:
        dups = read_table(spark, lake, "duplicates").where(F.col("run_id") == source["run_id"])
        if cfg.thresh is not None:
            dups = dups.where(F.col("distance") <= cfg.thresh)
        splits = split_of_samples(spark, read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset),
                                  cfg)
        kept = splits.select(F.col("sample_id").alias("kept_sample_id"), F.col("split").alias("kept_split"))
        leaks = (dups.join(splits, "sample_id").join(kept, "kept_sample_id")
                 .where(F.col("split") != F.col("kept_split"))
                 .select(F.lit(run.run_id).alias("run_id"), F.lit(cfg.brain_key).alias("brain_key"), "group_id",
                         "kept_sample_id", "kept_split", "sample_id", "split", "distance",
                         "kept_patch_index", "patch_index")).cache()
        leaks.write.mode("overwrite").parquet(run.stage_dir("leaks"))
        pairs = leaks.groupBy(F.concat_ws("|", F.least("split", "kept_split"), F.greatest("split", "kept_split"))
                              .alias("pair")).count().collect()
        leaks.unpersist()
        run.metrics.update({f"leaks:{row['pair']}": float(row["count"]) for row in pairs})
    log.info("leaks: %d duplicates across splits %s in %.1f s", run.rows_written.get("leaks", 0),
             {k: int(v) for k, v in run.metrics.items()}, time.perf_counter() - started)
    return run.run_id


JOB = Job(name="leaks", engine="spark", help="duplicates across splits on Spark",
          reads=("duplicates", "samples"),
          writes=("leaks",),
          run=run)


if __name__ == "__main__":
    JOB.main()
