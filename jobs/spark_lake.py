"""Lake tables in Spark: read through the Parquet files the Delta log lists (no Delta jars needed)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from brain.lake import Lake
from brain.schemas import TABLES, schema_of


def read_table(spark: SparkSession, lake: Lake, table: str) -> DataFrame:
    """The committed rows of a lake table (an empty frame with the schema when it has none)."""
    files = lake.file_uris(table)
    if not files:
        return spark.createDataFrame([], from_arrow_schema(schema_of(table)))
    return spark.read.parquet(*files)


def register_tables(spark: SparkSession, lake: Lake) -> list[str]:
    """Every lake table as a temporary view named after it; returns the names."""
    for name in TABLES:
        read_table(spark, lake, name).createOrReplaceTempView(name)
    return list(TABLES)
