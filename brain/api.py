"""The Python API: FiftyOne Brain's verbs on a lake.

    import brain
    lake = brain.open_lake("lake")                            # or a URI, conf="cluster/conf-ray.yaml", overrides
    lake.compute_embeddings(embeddings=vectors, sample_ids=ids)  # precomputed vectors; or model="resnet18"
    lake.compute_similarity(k=10)                             # a kNN index (key "knn")
    lake.compute_uniqueness()                                 # Arrow table: sample_id, uniqueness
    lake.find_duplicates(thresh=0.05)
    lake.compute_visualization(method="pca")
    lake.sort_by_similarity("a photo of a dog", k=5)          # a sample id, several, a vector or a text prompt
    lake.list_brain_runs(); lake.load_brain_results("uniqueness"); lake.sql("SELECT ...")

Every ``compute_*`` runs the job its CLI verb runs (``brain neighbors``, ``brain uniqueness``,
...), in this process, on the config's engines: a local Ray and a local Spark by default, left
running for the next call until :meth:`BrainLake.close` (or the ``with`` block's end). Keyword
arguments set fields of that job's config section (``compute_uniqueness(neighbors_key="knn2",
brain_key="u2")`` is ``--set uniqueness.neighbors_key=knn2 --set uniqueness.brain_key=u2``);
``settings={"neighbors.k": 20}`` sets any other field. An unknown argument is refused naming it
and the section's fields. Each returns what :func:`brain.results.load_results` loads for the new run.

How the library finds the jobs without importing them (``brain`` never imports ``jobs``: the
jobs import the library, and the library knows no engine): through entry points. The package
declares ``[project.entry-points."lakebrain.jobs"]`` (a callable returning ``{verb: Job}``) and
``"lakebrain.engines"`` (a callable stopping the engines this process started), read with
:mod:`importlib.metadata`. Entry points rather than a registry that ``jobs`` fills at import: with
a registry someone still has to import ``jobs`` first, while entry points are found from the
installed metadata alone, and another installed package can add jobs the same way.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from brain import results, runs, sql
from brain.config import Conf, ConfError, load_conf
from brain.lake import Lake
from brain.plugins import use_code_paths
from brain.vectors import PATCH_ID_SEPARATOR

JOBS_GROUP = "lakebrain.jobs"  # entry points: callables returning {verb: job declaration}
ENGINES_GROUP = "lakebrain.engines"  # entry points: callables stopping the engines this process started


def installed_jobs() -> dict[str, Any]:
    """Every job declared through the ``lakebrain.jobs`` entry points, by verb."""
    jobs: dict[str, Any] = {}
    points = entry_points(group=JOBS_GROUP)
    if not points:
        raise RuntimeError(f"no lakebrain jobs are installed (entry point group {JOBS_GROUP!r} is empty): install "
                           "the package with `pip install -e .` (or `make`), which declares them")
    for point in points:
        for verb, job in point.load()().items():
            if verb in jobs:
                raise ValueError(f"two installed jobs are named {verb!r} (entry point {point.name!r} and another)")
            jobs[verb] = job
    return jobs


def _section_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The model of ``model``'s section ``name``; None if that is no section (or no field)."""
    field = model.model_fields.get(name)
    kind = field.annotation if field else None
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _with_fields(conf: Conf, fields: dict[str, Any], *, what: str) -> Conf:
    """``conf`` with ``{"section.field" | "field": value}`` set and validated; errors name the field."""
    data = conf.model_dump()
    for name, value in fields.items():
        *sections, leaf = name.split(".")
        node, model = data, Conf
        for section in sections:
            sub = _section_model(model, section)
            if sub is None:
                raise ConfError(f"{what}: {name!r}: {section!r} is not a config section")
            node, model = node[section], sub
        if leaf not in model.model_fields:
            raise _unknown_field(what, name, model, ".".join(sections))
        node[leaf] = value
    try:
        return Conf.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfError(f"{what}: {problems}") from None


def _unknown_field(what: str, name: str, model: type[BaseModel], section: str) -> ConfError:
    where = f"the {section!r} config section" if section else "the config"
    return ConfError(f"{what}: unknown argument {name!r}: not a field of {where} "
                     f"(fields: {', '.join(model.model_fields)})")


def open_lake(lake: str | Path | None = None, *, conf: str | Path | Conf | None = None,
              overrides: dict[str, Any] | Sequence[str] | None = None, dataset: str | None = None) -> "BrainLake":
    """A lake for the Python API.

    ``lake``: a folder or URI (default: the config's); ``conf``: a YAML file (default
    ``conf/local.yaml``) or a :class:`~brain.config.Conf`; ``overrides``: ``{"neighbors.k": 20}``
    or ``["neighbors.k=20"]`` as ``--set`` takes them; ``dataset``: the dataset the jobs work on.
    """
    if isinstance(conf, Conf):
        loaded = conf.model_copy(deep=True)
        if overrides and not isinstance(overrides, dict):
            raise ConfError("with a Conf object, give overrides as a dict {'section.field': value}")
    else:
        loaded = load_conf(conf, None if isinstance(overrides, dict) else list(overrides or []))
    top = {"lake": Lake(lake if lake is not None else loaded.lake).uri}
    if dataset is not None:
        top["dataset"] = dataset
    return BrainLake(_with_fields(loaded, {**(overrides if isinstance(overrides, dict) else {}), **top},
                                  what="open_lake"))


class BrainLake:
    """A lake and the config its jobs run with; the verbs of FiftyOne's dataset brain methods."""

    def __init__(self, conf: Conf):
        self.conf = conf
        self.lake = Lake(conf.lake)
        self._jobs: dict[str, Any] | None = None
        use_code_paths(conf)  # your models by import path (a text tower for sort_by_similarity) import here

    def __repr__(self) -> str:
        return f"BrainLake({self.lake.uri!r}, dataset={self.conf.dataset!r})"

    def __enter__(self) -> "BrainLake":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the engines the jobs started in this process (a local Ray and Spark; a cluster stays)."""
        for point in entry_points(group=ENGINES_GROUP):
            point.load()()

    # -- running jobs ------------------------------------------------------------------------------
    def run_job(self, verb: str, section: str, fields: dict[str, Any], *, aliases: dict[str, str] | None = None,
                settings: dict[str, Any] | None = None) -> str:
        """Run job ``verb`` with ``fields`` of config ``section`` (``dataset`` is the top-level field) and
        ``settings`` (``{"section.field": value}``); returns the run id."""
        if self._jobs is None:
            self._jobs = installed_jobs()
        if verb not in self._jobs:
            raise ValueError(f"no job {verb!r} is installed (jobs: {', '.join(sorted(self._jobs))})")
        what = f"{verb} ({section} section)"
        section_model = _section_model(Conf, section)
        if section_model is None:
            raise ConfError(f"{what}: {section!r} is not a config section")
        named = {}
        for name, value in fields.items():
            field = (aliases or {}).get(name, name)
            if name != "dataset" and field not in section_model.model_fields:
                raise _unknown_field(what, name, section_model, section)
            named["dataset" if name == "dataset" else f"{section}.{field}"] = value
        conf = _with_fields(self.conf, {**(settings or {}), **named}, what=what)
        return self._jobs[verb].run(conf)

    def _computed(self, verb: str, section: str, fields: dict[str, Any], **options) -> Any:
        return results.load_results(self.lake, self.run_job(verb, section, fields, **options))

    def compute_embeddings(self, model: str | None = None, *, embeddings: str | Path | np.ndarray | None = None,
                           sample_ids: Sequence[str] | None = None, settings: dict[str, Any] | None = None,
                           **fields) -> pa.Table:
        """Embed the dataset's samples with ``model`` (``brain embed``; fields of ``embed``), or register
        precomputed ``embeddings`` (``brain register-embeddings``; fields of ``register_embeddings``):
        a .parquet/.npz/.npy file, or an [N, D] array with ``sample_ids``. Returns the run's rows."""
        if embeddings is None:
            if sample_ids is not None:
                raise ValueError("sample_ids go with embeddings= (an array of precomputed vectors)")
            return self._computed("embed", "embed", {**fields, **({"model": model} if model else {})},
                                  settings=settings)
        if model is not None:
            raise ValueError("give a model to embed with, or precomputed embeddings, not both")
        if isinstance(embeddings, (str, Path)):
            if sample_ids is not None:
                raise ValueError("sample_ids go with an array; for a .npy file give ids_file=")
            return self._computed("register-embeddings", "register_embeddings", {**fields, "file": str(embeddings)},
                                  settings=settings)
        vectors = np.asarray(embeddings)
        if sample_ids is None or len(sample_ids) != len(vectors):
            raise ValueError(f"an array of embeddings needs sample_ids, one per row ({len(vectors)} rows, "
                             f"{'no' if sample_ids is None else len(sample_ids)} ids)")
        with tempfile.TemporaryDirectory(prefix="lakebrain-embeddings-") as folder:
            path = Path(folder) / "embeddings.npz"
            np.savez(path, sample_id=np.asarray(list(sample_ids), dtype=str), vector=vectors)
            return self._computed("register-embeddings", "register_embeddings", {**fields, "file": str(path)},
                                  settings=settings)

    def compute_similarity(self, *, settings: dict[str, Any] | None = None, **fields) -> list:
        """A kNN index over an embeddings run (``brain neighbors``; fields of ``neighbors``: embeddings_key,
        k, metric, brain_key, ...). Returns its FAISS shards; query it with :meth:`sort_by_similarity`."""
        return self._computed("neighbors", "neighbors", fields, settings=settings)

    def compute_uniqueness(self, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """Uniqueness from a kNN run (``brain uniqueness``; fields of ``uniqueness``: neighbors_key, brain_key)."""
        return self._computed("uniqueness", "uniqueness", fields, settings=settings)

    def find_duplicates(self, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """Near duplicates (``brain duplicates``; fields of ``duplicates``: thresh or fraction, grouping,
        verify, neighbors_key, brain_key, ...)."""
        return self._computed("duplicates", "duplicates", fields, settings=settings)

    compute_near_duplicates = find_duplicates

    def compute_exact_duplicates(self, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """Samples with equal content hashes (``brain duplicates --set duplicates.method=exact``), under brain
        key ``exact_duplicates`` unless ``brain_key`` is given."""
        return self._computed("duplicates", "duplicates", {"brain_key": "exact_duplicates", **fields,
                                                           "method": "exact"}, settings=settings)

    def compute_leaky_splits(self, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """Duplicates across splits, from a duplicates run (``brain leaks``; fields of ``leaks``)."""
        return self._computed("leaks", "leaks", fields, settings=settings)

    def find_unique(self, n: int, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """``n`` samples spread over the embedding space (``brain unique``; fields of ``unique``)."""
        return self._computed("unique", "unique", {**fields, "n": n}, settings=settings)

    def compute_hardness(self, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """Entropy of a predictions run's logits (``brain hardness``; fields of ``label_quality``:
        predictions_key; ``brain_key`` is its hardness_key)."""
        return self._computed("hardness", "label_quality", fields, aliases={"brain_key": "hardness_key"},
                              settings=settings)

    def compute_mistakenness(self, *, settings: dict[str, Any] | None = None, **fields) -> dict[str, pa.Table]:
        """Label mistakes from a predictions run (``brain label-quality``; fields of ``label_quality``)."""
        return self._computed("label-quality", "label_quality", fields, settings=settings)

    def compute_visualization(self, *, settings: dict[str, Any] | None = None, **fields) -> pa.Table:
        """A 2-D/3-D map (``brain visualize``; fields of ``visualization``: method umap|tsne|pca, num_dims,
        embeddings_key, where, points, ...)."""
        return self._computed("visualize", "visualization", fields, settings=settings)

    def compute_familiarity(self, *, settings: dict[str, Any] | None = None, **fields) -> results.FamiliarityResults:
        """A density model of an embeddings run and every sample's score (``brain familiarity``)."""
        return self._computed("familiarity", "familiarity", fields, settings=settings)

    def register_predictions(self, file: str | Path, *, settings: dict[str, Any] | None = None,
                             **fields) -> results.PredictionsResults:
        """Predictions made elsewhere (``brain register-predictions``; fields of ``register_predictions``)."""
        return self._computed("register-predictions", "register_predictions", {**fields, "file": str(file)},
                              settings=settings)

    def apply_model(self, model: str, *, settings: dict[str, Any] | None = None,
                    **fields) -> results.PredictionsResults:
        """Predictions of a zoo model or model file (``brain apply-model``; fields of ``apply_model``)."""
        return self._computed("apply-model", "apply_model", {**fields, "model": model}, settings=settings)

    # -- queries ---------------------------------------------------------------------------------------
    def sort_by_similarity(self, query: str | Sequence[str] | np.ndarray, *, k: int = 15, brain_key: str = "knn",
                           reverse: bool = False, where: str | None = None, save_as: str | None = None) -> pa.Table:
        """The ``k`` samples nearest ``query`` in kNN run ``brain_key``, joined to ``samples``.

        ``query``: a sample id (a patch id ``SAMPLE_ID#INDEX`` for a kNN run over patches), a list of them
        (the mean of their vectors), a vector, or a text prompt (a string that is no sample id of the lake;
        needs a model with a text tower, CLIP).
        ``reverse``: the least similar; ``where``: a SQL condition over samples; ``save_as``: also save
        the result as a view run (see :func:`brain.similarity.similar`).
        """
        from brain.similarity import similar

        query_kind: dict[str, Any]
        if isinstance(query, str):
            sample_part, sep, index = query.rpartition(PATCH_ID_SEPARATOR)  # a patch id names a box of a sample
            named = sample_part if sep and index.isdigit() else query
            # in SQL: an Arrow filter fails on ingested lakes, whose sample ids are stored as string_view
            is_sample = sql.query(self.lake, f"SELECT 1 FROM samples WHERE sample_id = {runs.sql_literal(named)}"
                                  ).num_rows > 0
            query_kind = {"sample_id": query} if is_sample else {"text": query}
        elif isinstance(query, np.ndarray) or (query and not isinstance(query[0], str)):
            query_kind = {"vector": np.asarray(query)}
        else:
            query_kind = {"sample_id": list(query)}
        return similar(self.lake, brain_key, k=k, reverse=reverse, where=where, save_as=save_as, **query_kind)

    def sql(self, query: str, **options) -> pa.Table:
        """SQL over the lake's tables (DuckDB; see :func:`brain.sql.query`)."""
        from brain import sql

        return sql.query(self.lake, query, **options)

    # -- the run catalog ----------------------------------------------------------------------------
    def list_brain_runs(self, *, method: str | None = None) -> list[str]:
        """Brain keys that have a current run (of ``method`` when given), sorted."""
        table = runs.list_runs(self.lake, method=method)
        return sorted(set(table.filter(table["current"])["brain_key"].to_pylist()))

    def get_brain_info(self, key: str) -> dict[str, Any]:
        """The run record of ``key`` (its current run, or a run id): config, inputs, versions, status, timings."""
        info = runs.readable_run(self.lake, key)
        return {**info, "config": json.loads(info["config"])}

    def load_brain_results(self, key: str) -> Any:
        """What the run produced (see :func:`brain.results.load_results`)."""
        return results.load_results(self.lake, key)

    def load_brain_view(self, key: str) -> pa.Table:
        """The samples the run was computed on (see :func:`brain.runs.load_view`)."""
        return runs.load_view(self.lake, key)

    def rename_brain_run(self, old: str, new: str) -> None:
        runs.rename_run(self.lake, old, new)

    def delete_brain_run(self, key: str) -> None:
        """Delete the run with its rows and files (see :func:`brain.runs.delete_run`)."""
        runs.delete_run(self.lake, key)

    def delete_brain_runs(self) -> list[str]:
        """Delete every run of this dataset that is not running; returns their ids."""
        deleted, _running = runs.delete_runs(self.lake, dataset=self.conf.dataset)
        return deleted
