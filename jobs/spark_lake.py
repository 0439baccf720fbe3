"""Lake tables in Spark: read through the Parquet files the Delta log lists (no Delta jars needed).

:func:`register_tables` gives Spark SQL the same names as :mod:`brain.sql`: each run-keyed
table shows the rows of the runs current in one catalog snapshot, ``<table>_history`` every
stored row, ``runs`` the catalog.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from brain import runs
from brain.lake import Lake
from brain.schemas import RUN_RESULT_TABLES, TABLES, schema_of
from brain.sql import HISTORY_SUFFIX


def read_table(spark: SparkSession, lake: Lake, table: str) -> DataFrame:
    """Every committed row of a lake table, all runs (an empty frame with the schema when it has none).

    Read with the lake schema, not one inferred from a file: files written before a column was added
    (e.g. the patch columns) read it as null."""
    files = lake.file_uris(table)
    if not files:
        return spark.createDataFrame([], from_arrow_schema(schema_of(table)))
    return spark.read.schema(from_arrow_schema(schema_of(table))).parquet(*files)


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
