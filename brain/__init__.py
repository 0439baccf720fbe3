"""lakebrain: a data-curation brain for image datasets in a data lake.

``brain`` holds the algorithms (plain functions over NumPy/Arrow arrays), the
model interface, the FAISS index helpers, the lake's table schemas and the run
catalog. It imports neither Ray nor Spark: the engines live in ``jobs``.
"""

__version__ = "0.1.0"
