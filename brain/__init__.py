"""lakebrain: a data-curation brain for image datasets in a data lake.

``brain`` holds the algorithms (plain functions over NumPy/Arrow arrays), the
model interface, the FAISS index helpers, the lake's table schemas and the run
catalog. It imports neither Ray nor Spark: the engines live in ``jobs``.

``brain.open_lake(...)`` opens a lake for the Python API (:mod:`brain.api`): FiftyOne
Brain's verbs, run as the same jobs the ``brain`` command runs.
"""

__version__ = "0.1.0"

_API = ("open_lake", "BrainLake")


def __getattr__(name: str):
    # Imported on first use: `import brain` stays cheap for the engines' workers, which import brain.* modules.
    if name in _API:
        from brain import api

        return getattr(api, name)
    raise AttributeError(f"module 'brain' has no attribute {name!r}")
