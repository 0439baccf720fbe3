"""An embeddings run's vectors for driver-side fits: which run, which samples, a bounded random sample.

A *vector set* names the samples of one embeddings run, optionally one split::

    SPEC = NAME[@SPLIT]

``NAME`` is an embeddings brain key (its newest succeeded run), else a dataset
name (the newest succeeded embeddings run of that dataset). ``@SPLIT`` keeps the
samples whose ``samples.split`` is ``SPLIT``. Examples: ``embeddings``,
``embeddings@train``, ``digits@test``.

A *patch* vector set (``resolve(..., patches=True)``) may name a ``patch_embeddings`` run instead:
its items are the boxes, each named by its patch id ``SAMPLE_ID#PATCH_INDEX`` (:func:`patch_ids`),
as the kNN index, similarity search and the maps name them.

Fits (density models, UMAP) run on the driver over at most ``max_rows`` rows
drawn at random (:func:`sample`): only those rows' vectors are read
(:func:`read_vectors`), so the driver's memory is bounded whatever the lake's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.lake import Lake, plain_strings

PATCH_TABLE = "patch_embeddings"
PATCH_ID_SEPARATOR = "#"


@dataclass(frozen=True)
class VectorSet:
    spec: str  # as given
    run_id: str  # the embeddings run
    brain_key: str
    dataset: str
    split: str | None
    table: str = "embeddings"  # or PATCH_TABLE for a patch embeddings run

    @property
    def patches(self) -> bool:
        return self.table == PATCH_TABLE


def resolve(lake: Lake, spec: str, *, patches: bool = False) -> VectorSet:
    """The embeddings run and split that ``spec`` (``NAME[@SPLIT]``) names; a clear error if none.

    With ``patches``, ``NAME`` may also be the brain key of a patch embeddings run."""
    name, _, split = spec.partition("@")
    if not name:
        raise ValueError(f"vector set {spec!r} must look like EMBEDDINGS_KEY_OR_DATASET[@SPLIT]")
    catalog = runs.list_runs(lake)
    done = [r for r in reversed(catalog.to_pylist()) if r["current"]]
    by_key = [r for r in done if r["brain_key"] == name]
    allowed = ("embeddings", "patch_embeddings") if patches else ("embeddings",)
    if by_key and by_key[0]["method"] not in allowed:
        raise ValueError(f"{name!r} is the brain key of a {by_key[0]['method']} run, not of an "
                         + " or ".join(f"{m.replace('_', ' ')} run" for m in allowed))
    found = by_key or [r for r in done if r["method"] == "embeddings" and r["dataset"] == name]
    if not found:
        keys = sorted({r["brain_key"] for r in done if r["method"] == "embeddings"})
        datasets = sorted({r["dataset"] for r in done if r["method"] == "embeddings"})
        raise ValueError(f"{name!r} is neither an embeddings brain key {keys} nor an embedded dataset "
                         f"{datasets} in {lake.uri}")
    run = found[0]
    return VectorSet(spec, run["run_id"], run["brain_key"], run["dataset"], split or None,
                     table=embeddings_table(run["method"]))


def embeddings_table(method: str) -> str:
    """The table holding the vectors of a run of ``method`` (embeddings or patch_embeddings)."""
    return PATCH_TABLE if method == "patch_embeddings" else "embeddings"


def patch_ids(sample_ids: pa.Array | pa.ChunkedArray, patch_index: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``SAMPLE_ID#PATCH_INDEX``: one string naming a box, where a single id column must name it."""
    return pc.binary_join_element_wise(pc.cast(sample_ids, pa.string()), pc.cast(patch_index, pa.string()),
                                       PATCH_ID_SEPARATOR)


def split_patch_ids(ids: pa.Array | pa.ChunkedArray | list[str]) -> tuple[pa.Array, pa.Array]:
    """Patch ids → (sample ids, patch indexes as int32); an error names an id that is not a patch id."""
    ids = pa.array(ids, pa.string()) if isinstance(ids, list) else pc.cast(ids, pa.string())
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    parts = pc.extract_regex(ids, rf"^(?P<sample_id>.*){PATCH_ID_SEPARATOR}(?P<patch_index>[0-9]+)$")
    if parts.null_count:
        bad = ids.filter(pc.is_null(parts))[0].as_py()
        raise ValueError(f"{bad!r} is not a patch id SAMPLE_ID{PATCH_ID_SEPARATOR}PATCH_INDEX")
    return parts.field("sample_id"), pc.cast(parts.field("patch_index"), pa.int32())


def item_ids(rows: pa.Table | pa.RecordBatch, table: str) -> pa.Array:
    """The ids of a vectors table's rows: sample ids, or patch ids for ``patch_embeddings``."""
    ids = (patch_ids(rows.column("sample_id"), rows.column("patch_index")) if table == PATCH_TABLE
           else rows.column("sample_id"))
    return ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids


def id_columns(table: str) -> list[str]:
    """The columns :func:`item_ids` needs."""
    return ["sample_id", "patch_index"] if table == PATCH_TABLE else ["sample_id"]


def patch_boxes(lake: Lake, run_id: str) -> pa.Table:
    """``sample_id``, ``patch_index``, ``patch_label``, ``patch_bbox`` of a patch embeddings run's boxes."""
    rows = plain_strings(lake.read(PATCH_TABLE, columns=["sample_id", "patch_index", "label", "bbox"],
                                   filter=pc.field("run_id") == run_id))
    return rows.rename_columns(["sample_id", "patch_index", "patch_label", "patch_bbox"])


def indexed_patches(lake: Lake, knn_run: dict) -> str | None:
    """The patch embeddings run a kNN run indexed, or None when it indexed whole images."""
    run_id = dict(knn_run.get("input_run_ids") or []).get("embeddings")  # a map: (role, run id) pairs
    if run_id is None:
        return None
    return run_id if runs.get_run(lake, run_id)["method"] == "patch_embeddings" else None


def members(lake: Lake, vset: VectorSet) -> pa.Table:
    """``item_id``, ``sample_id``, ``label``, ``split`` of the set's items, ordered by ``item_id``: the samples
    (item id = sample id, their label), or for a patch set the boxes (patch ids, the box's label)."""
    ids = plain_strings(lake.read(vset.table, columns=id_columns(vset.table) + (["label"] if vset.patches else []),
                                  filter=pc.field("run_id") == vset.run_id))
    if ids.num_rows == 0:
        raise ValueError(f"embeddings run {vset.run_id} ({vset.brain_key!r}) has no rows")
    samples = plain_strings(lake.read("samples", columns=["sample_id", "label", "split"]))
    if vset.patches:
        samples = samples.drop_columns(["label"])
    rows = ids.append_column("item_id", item_ids(ids, vset.table)).join(samples, "sample_id", join_type="left outer")
    rows = rows.select(["item_id", "sample_id", "label", "split"])
    if vset.split is not None:
        kept = rows.filter(pc.equal(rows["split"], vset.split))
        if kept.num_rows == 0:
            splits = sorted({s for s in rows["split"].to_pylist() if s is not None})
            raise ValueError(f"{vset.spec!r}: no samples of split {vset.split!r} in embeddings run "
                             f"{vset.run_id}; its splits: {splits}")
        rows = kept
    return rows.sort_by("item_id")


def sample(rows: pa.Table, max_rows: int, *, seed: int = 0) -> pa.Table:
    """At most ``max_rows`` of ``rows`` drawn at random without replacement, in their order."""
    if rows.num_rows <= max_rows:
        return rows
    chosen = np.sort(np.random.default_rng(seed).choice(rows.num_rows, size=max_rows, replace=False))
    return rows.take(pa.array(chosen))


def read_vectors(lake: Lake, run_id: str, sample_ids: pa.Array | list[str], *,
                 table: str = "embeddings") -> np.ndarray:
    """The vectors (N, D) of ``sample_ids`` (patch ids for ``patch_embeddings``) in run ``run_id``, in that order."""
    wanted = pa.array(sample_ids, pa.string()) if isinstance(sample_ids, list) else sample_ids.cast(pa.string())
    samples = split_patch_ids(wanted)[0] if table == PATCH_TABLE else wanted
    rows = plain_strings(lake.read(table, columns=id_columns(table) + ["vector"],
                                   filter=(pc.field("run_id") == run_id) & pc.field("sample_id").isin(samples)))
    position = pc.index_in(wanted, item_ids(rows, table))
    if position.null_count:
        missing = wanted.filter(pc.is_null(position))[0]
        raise ValueError(f"embeddings run {run_id} has no vector for {'patch' if table == PATCH_TABLE else 'sample'} "
                         f"{missing}")
    return matrix(rows.take(position), run_id)


def matrix(table: pa.Table | pa.RecordBatch, run_id: str) -> np.ndarray:
    """A table's ``vector`` column as (N, D) float64; errors name the sample with a bad vector."""
    return to_matrix(table.column("vector"), table.column("sample_id"), context=f"embeddings run {run_id}")


# A vector whose L2 norm exceeds this squares past float32's maximum (3.4e38): FAISS and the models
# compute norms in float32, where it becomes inf and the normalised vector all zeros.
MAX_FLOAT32_NORM = float(np.sqrt(np.finfo(np.float32).max))  # ≈ 1.8e19


def to_matrix(column: pa.Array | pa.ChunkedArray, ids, *, what: str = "vector", context: str = "",
              width: int | None = None, dtype=np.float64) -> np.ndarray:
    """A list<number> column of N rows → an (N, D) ``dtype`` array: the one Arrow → NumPy conversion.

    Checked before anything is computed on it: no null row, every row of the same length D
    (``width`` when given), every value finite. An error names the first bad row by its id
    (``ids[i]``, e.g. the sample id) and says what the rows are (``what``: vector, logits,
    distances), after ``context`` (e.g. the run).
    """
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    prefix = f"{context}: " if context else ""
    n = len(values)
    if n == 0:
        return np.zeros((0, width or 0), dtype)
    if values.null_count:
        bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{prefix}sample {_id(ids, bad)} has no {what}")
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    expected = lengths[0] if width is None else width
    if (lengths != expected).any():
        bad = int(np.flatnonzero(lengths != expected)[0])
        others = f"expected {width}" if width is not None else f"the first has {expected}"
        raise ValueError(f"{prefix}sample {_id(ids, bad)} has a {what} of length {lengths[bad]}, {others}")
    if expected == 0:
        raise ValueError(f"{prefix}every {what} is empty (length 0)")
    flat = values.flatten()
    if flat.null_count:
        bad = int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]) // expected
        raise ValueError(f"{prefix}sample {_id(ids, bad)} has a null value in its {what}")
    x = flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(n, expected)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        names = [_id(ids, int(i)) for i in bad[:5]]
        raise ValueError(f"{prefix}sample {names[0]} has NaN or infinite values in its {what}"
                         + (f" ({bad.size} such samples: {names}...)" if bad.size > 1 else ""))
    return x


def to_list_array(matrix: np.ndarray, ids, *, what: str = "vector", context: str = "",
                  max_norm: float | None = MAX_FLOAT32_NORM) -> pa.ListArray:
    """An (N, D) array → list<float32> (the lake's vector type), checked before anything is stored.

    Refused, naming the row's id: a matrix that is not 2-D or not one row per id, NaN or
    infinite values (also values that overflow float32), and rows whose L2 norm (computed in
    float64) exceeds ``max_norm`` (default :data:`MAX_FLOAT32_NORM`; None: no limit, for
    coordinates such as boxes).
    """
    prefix = f"{context}: " if context else ""
    x = np.asarray(matrix)
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise ValueError(f"{prefix}expected one {what} per sample, an array of shape ({len(ids)}, D); "
                         f"got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{prefix}{what}s must be numbers, got dtype {x.dtype}")
    x64 = x.astype(np.float64, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        as32 = x64.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(as32).all(axis=1))
    if bad.size:
        raise ValueError(f"{prefix}sample {_id(ids, int(bad[0]))} has NaN or infinite values in its {what} "
                         f"(or values beyond float32's range; {bad.size} such samples)")
    if max_norm is not None and x.shape[0]:
        norms = np.linalg.norm(x64, axis=1)
        big = np.flatnonzero(norms > max_norm)
        if big.size:
            raise ValueError(f"{prefix}sample {_id(ids, int(big[0]))} has a {what} of norm {norms[big[0]]:.3g}, "
                             f"above {max_norm:.3g}: its square overflows float32, so it cannot be normalised "
                             f"or compared ({big.size} such samples)")
    n, d = as32.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)) if d else pa.array(np.zeros(n + 1, np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(as32).reshape(-1)))


def _id(ids, i: int) -> str:
    value = ids[i]
    return str(value.as_py() if isinstance(value, pa.Scalar) else value)
