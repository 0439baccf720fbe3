"""Entry points that move data between the lake, the engines (Ray, Spark) and ``brain``.

Each job module declares itself once (``JOB = Job(...)``, see ``jobs.registry``) and runs as
``brain NAME``, ``python -m jobs.NAME --conf FILE [--set section.field=value ...]`` or
``brain submit NAME`` on a cluster (Ray Jobs API, spark-submit): it reads its inputs from
the lake and writes its outputs to the lake, nothing else.
"""
