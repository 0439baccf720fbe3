"""Lake tables in Spark: read through the Parquet files the Delta log lists (no Delta jars needed).

A lake in a local (or mounted) folder is read with ``spark.read.parquet`` and staged with
``DataFrame.write.parquet``. A lake on object storage is never reached through Spark's own
filesystems (pip's pyspark has no ``s3a`` connector): :func:`read_files` distributes the list of
files and each task reads its files with pyarrow through the lake's filesystem inside
``mapInArrow``, and :func:`write_staged` has each task write its partition as one Parquet file into
the run's staging through the same filesystem. Both use only DataFrame APIs that Spark Connect has.

:func:`register_tables` gives Spark SQL the same names as :mod:`brain.sql`: each run-keyed
table shows the rows of the runs current in one catalog snapshot, ``<table>_history`` every
stored row, ``runs`` the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from brain import runs
from brain.lake import Lake
from brain.schemas import RUN_RESULT_TABLES, TABLES, schema_of
from brain.sql import HISTORY_SUFFIX


MAX_READ_TASKS = 256  # a lake on object storage: its files are read by at most this many tasks


def read_table(spark: SparkSession, lake: Lake, table: str) -> DataFrame:
    """Every committed row of a lake table, all runs (an empty frame with the schema when it has none).

    Read with the lake schema, not one inferred from a file: files written before a column was added
    (e.g. the patch columns) read it as null."""
    return read_files(spark, lake, table, lake.file_uris(table))


def read_staged(spark: SparkSession, run: runs.Run, table: str) -> DataFrame:
    """The rows ``run`` staged so far for ``table`` (not committed yet)."""
    base = run.lake.table_uri(table)
    return read_files(spark, run.lake, table, [f"{base}/{rel}" for rel in run.lake.staged_files(table, run.run_id)])


def read_files(spark: SparkSession, lake: Lake, table: str, files: list[str]) -> DataFrame:
    """The rows of some of ``table``'s Parquet files (URIs under the lake), with the table's schema."""
    schema = schema_of(table)
    if not files:
        return spark.createDataFrame([], from_arrow_schema(schema))
    if lake.is_local:
        return spark.read.schema(from_arrow_schema(schema)).parquet(*files)

    def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for uri in batch.column("uri").to_pylist():
                for part in lake.files_dataset([uri], schema=schema).to_batches():
                    yield part
    listed = spark.createDataFrame([(uri,) for uri in files], "uri string")
    return listed.repartition(min(len(files), MAX_READ_TASKS)).mapInArrow(read, from_arrow_schema(schema))


def write_staged(frame: DataFrame, run: runs.Run, table: str) -> None:
    """Stage ``frame``'s rows as ``run``'s Parquet files for ``table`` (committed when the run ends).

    A local lake: Spark writes the folder. Elsewhere each task writes its partition as one file,
    named by the partition, so a retried task replaces its file rather than adding rows.
    """
    if run.lake.is_local:
        frame.write.mode("overwrite").parquet(run.stage_dir(table))
        return
    lake, run_id = run.lake, run.run_id

    def stage(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = [batch for batch in batches if batch.num_rows]
        if parts:
            lake.stage(table, run_id, pa.Table.from_batches(parts),
                       name=f"part-{TaskContext.get().partitionId():05d}")
        yield pa.RecordBatch.from_pydict({"rows": pa.array([sum(len(b) for b in parts)], pa.int64())})
    frame.mapInArrow(stage, "rows long").collect()


def register_tables(spark: SparkSession, lake: Lake, *, history: bool = False) -> list[str]:
    """Every lake table as a temporary view named after it, as of one catalog snapshot; returns the names."""
    snapshot = runs.catalog(lake)
    spark.createDataFrame(snapshot.runs).createOrReplaceTempView("runs")
    current = snapshot.runs.filter(snapshot.runs["current"]).select(["run_id", "brain_key"])
    current_runs = spark.createDataFrame(current.to_pylist(), "run_id string, brain_key string")
    names = ["runs"]
    for name, schema in TABLES.items():
        rows = read_table(spark, lake, name)
        if name in RUN_RESULT_TABLES:
            rows.createOrReplaceTempView(name + HISTORY_SUFFIX)
            names.append(name + HISTORY_SUFFIX)
            if not history:
                kept = current_runs.withColumnRenamed("brain_key", "_current_key")
                rows = rows.join(F.broadcast(kept), "run_id", "left_semi") if "brain_key" not in schema.names else (
                    rows.join(F.broadcast(kept), "run_id").withColumn("brain_key", F.col("_current_key"))
                    .select(*schema.names))
        rows.createOrReplaceTempView(name)
        names.append(name)
    return names
