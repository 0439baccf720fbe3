"""Entry points that move data between the lake, the engines (Ray, Spark) and ``brain``.

Each job is ``python -m jobs.NAME --conf FILE [--set section.field=value ...]`` and
runs the same on the embedded default (local Ray / local Spark) or submitted to a
cluster (``ray job submit``, ``spark-submit``): it reads its inputs from the lake
and writes its outputs to the lake, nothing else.
"""
