"""Leaks job on Spark: duplicates whose members sit in different splits → `leaks`.

    duplicates (this run) ⋈ samples (split of the duplicate and of its kept sample)
      → rows where the splits differ → Parquet in staging → one Delta commit
      → a count per split pair (sorted names joined by '|') in the run's metrics, e.g. leaks:test|train
"""

from __future__ import annotations

import logging
import time

from brain import runs
from brain.config import Conf
from brain.lake import Lake
from jobs.registry import Job

log = logging.getLogger("jobs.leaks")


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
        splits = read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset).select(
            "sample_id", F.coalesce("split", F.lit("")).alias("split"))
        kept = splits.select(F.col("sample_id").alias("kept_sample_id"), F.col("split").alias("kept_split"))
        leaks = (dups.join(splits, "sample_id").join(kept, "kept_sample_id")
                 .where(F.col("split") != F.col("kept_split"))
                 .select(F.lit(run.run_id).alias("run_id"), F.lit(cfg.brain_key).alias("brain_key"), "group_id",
                         "kept_sample_id", "kept_split", "sample_id", "split", "distance")).cache()
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
