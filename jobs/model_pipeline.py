"""The sharded, resumable model pipeline on Ray Data that embed, apply-model and patch jobs share.

    items (sample_id, uri[, box columns]) sorted by sample_id, cut into shards of `shard_size`
      (the first shard: one model batch, so results and errors show as soon as the model is up)
      → ray.data.from_items(one row per shard: its items as Arrow IPC bytes)
      → map_batches(decode_shard)   CPU tasks: read + decode (+ crop) + model.preprocess; a row out is the
                                    whole decoded shard as one NumPy buffer (no per-image Ray rows)
      → map_batches(ModelActor)     actors keep the model loaded (1 GPU each when the cluster has GPUs),
                                    run it in batches of `batch_size`, stage `shard-<id>.parquet` themselves
      → commit every staged shard of the run in one Delta transaction

A shard's id is its index and a hash of its sample ids (``000003-9f2c…``), so the same
samples give the same shard files. Images that fail to decode become ``ingest_errors``
rows of that shard (staged under the same name); the shard's other images are kept.

Resume: with ``resume=True`` a run whose brain key, dataset and job settings match the
newest unfinished (failed or killed) run continues that run's id; shards already
staged there are not recomputed, and a failure keeps the staged shards for the next try.
If that run staged shards the current samples do not make (the dataset changed), the
job starts a new run instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import images, progress, runs
from brain.config import Conf
from brain.errors import plain_text
from brain.lake import Lake
from brain.models import get_model, load_model
from brain.patches import crop
from brain.schemas import INGEST_ERRORS
from brain.vectors import to_list_array

log = logging.getLogger("jobs.model_pipeline")


def shard_items(items: pa.Table, shard_size: int, first_shard_size: int | None = None) -> list[tuple[str, pa.Table]]:
    """Sort by (sample_id[, patch_index]) and cut into shards with deterministic ids.

    The first shard holds ``first_shard_size`` items (default: ``shard_size``), the others ``shard_size``.
    A small first shard (one model batch) makes the first results, or the model's first error, come out
    as soon as the model actor is up instead of after a whole shard has been decoded and run.
    """
    keys = [("sample_id", "ascending")] + ([("patch_index", "ascending")] if "patch_index" in items.column_names else [])
    items = items.sort_by(keys)
    first = min(first_shard_size or shard_size, shard_size)
    starts = [0, *range(first, items.num_rows, shard_size)] if items.num_rows else []
    ends = [*starts[1:], items.num_rows]
    shards = []
    for i, (start, end) in enumerate(zip(starts, ends)):
        part = items.slice(start, end - start)
        digest = hashlib.sha1("\n".join(part["sample_id"].to_pylist()).encode()).hexdigest()[:12]
        shards.append((f"{i:06d}-{digest}", part))
    return shards


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def decode_shard(batch: pa.Table, *, model_name: str | None, model_kwargs: dict, lake: Lake, run_id: str,
                 dataset: str, limits: images.DecodeLimits) -> pa.Table:
    """Read and decode each shard's images (cropping boxes when the shard has a bbox column), then preprocess.

    Decoding runs in a worker process with ``limits`` (:func:`brain.images.load_isolated`): a file that is
    refused, hangs or crashes the decoder is one `ingest_errors` row; the shard's other images go on.

    A row in is one shard (its items as Arrow IPC); a row out is the same shard decoded: the items kept,
    and the preprocessed batch as raw bytes with its shape and dtype, so the actor gets one whole shard a call.
    """
    from brain.lake import plain_strings

    model = get_model(model_name, **model_kwargs)
    out = []
    for shard, data in zip(batch["shard"].to_pylist(), batch["items"].to_pylist()):
        items = plain_strings(_from_ipc(data))
        boxes = items["bbox"].to_pylist() if "bbox" in items.column_names else None
        uris = items["uri"].to_pylist()
        unique = list(dict.fromkeys(uris))  # patches of one image: decoded once
        decoded = dict(zip(unique, images.load_isolated(unique, limits=limits)))
        keep, pixels, errors = [], [], []
        for row, (sample_id, uri) in enumerate(zip(items["sample_id"].to_pylist(), uris)):
            found = decoded[uri]
            if isinstance(found, images.ImageError):
                if not errors or errors[-1]["uri"] != uri:
                    errors.append(dict(run_id=run_id, dataset=dataset, uri=uri, stage="decode",
                                       reason=plain_text(f"sample {sample_id}: {found}"),
                                       recorded_at=dt.datetime.now(dt.timezone.utc)))
                continue
            pixels.append(crop(found.pixels, boxes[row]) if boxes is not None else found.pixels)
            keep.append(row)
        if errors:
            lake.stage("ingest_errors", run_id, pa.Table.from_pylist(errors, schema=INGEST_ERRORS),
                       name=f"shard-{shard}")
        array = np.ascontiguousarray(model.preprocess(pixels))
        out.append(dict(shard=shard, items=_ipc(items.take(pa.array(keep, pa.int64())).drop_columns(["uri"])),
                        pixels=array.tobytes(), shape=list(array.shape), dtype=str(array.dtype)))
    return pa.Table.from_pylist(out, schema=DECODED)


DECODED = pa.schema([("shard", pa.string()), ("items", pa.large_binary()), ("pixels", pa.large_binary()),
                     ("shape", pa.list_(pa.int64())), ("dtype", pa.string())])


def _decoded_batch(row: dict) -> dict[str, np.ndarray]:
    """One decoded shard → the arrays the row builders take."""
    items = _from_ipc(row["items"])
    part = {"sample_id": np.array(items["sample_id"].to_pylist(), dtype=object),
            "pixels": np.frombuffer(row["pixels"], dtype=row["dtype"]).reshape(row["shape"]).copy()}
    if "bbox" in items.column_names:
        part["patch_index"] = np.array(items["patch_index"].to_pylist(), dtype=np.int32)
        part["label"] = np.array(items["label"].to_pylist(), dtype=object)
        part["bbox"] = np.array(items["bbox"].to_pylist(), dtype=np.float32).reshape(-1, 4)
    return part


# -- what the actor writes per kind of job --------------------------------------------------------------
def embedding_rows(model, batch: dict, run_id: str, options: dict) -> pa.Table:
    vectors = _in_batches(model, model.embed, batch["pixels"], lambda: np.zeros((0, model.embedding_dim or 0), np.float32))
    ids = batch["sample_id"].tolist()
    return pa.table({"run_id": pa.array([run_id] * len(ids), pa.string()),
                     "sample_id": pa.array(ids, pa.string()),
                     "vector": to_list_array(vectors, ids, context=f"model {model.name!r}")})


def patch_rows(model, batch: dict, run_id: str, options: dict) -> pa.Table:
    rows = embedding_rows(model, batch, run_id, options)
    return pa.table({"run_id": rows["run_id"], "sample_id": rows["sample_id"],
                     "patch_index": pa.array(batch["patch_index"].tolist(), pa.int32()),
                     "label": pa.array(batch["label"].tolist(), pa.string()),
                     "bbox": to_list_array(batch["bbox"].reshape(-1, 4), batch["sample_id"], what="bbox",
                                           max_norm=None),
                     "vector": rows["vector"]})


def prediction_rows(model, batch: dict, run_id: str, options: dict) -> pa.Table:
    from brain.models import Predictions

    n = len(batch["sample_id"])
    parts = [model.predict(batch["pixels"][i:i + model.batch_size]) for i in range(0, n, model.batch_size)]
    preds = Predictions.concat(parts) if parts else Predictions([], np.zeros(0, np.float32))
    if options.get("label_thresh") is not None:
        preds = preds.thresholded(options["label_thresh"])
    return predictions_table(preds, batch["sample_id"].tolist(), run_id, store_logits=options["store_logits"])


def predictions_table(preds, sample_ids: list[str], run_id: str, *, store_logits: bool) -> pa.Table:
    """:class:`~brain.models.Predictions` → rows of the ``predictions`` table."""
    from brain.schemas import PREDICTIONS

    n = len(sample_ids)
    if len(preds) != n:
        raise ValueError(f"{len(preds)} predictions for {n} samples")
    # logits are checked (finite, one row per sample) even when not stored: the labels come from them
    checked = None if preds.logits is None else to_list_array(preds.logits, sample_ids, what="row of logits")
    logits = checked if store_logits and checked is not None else pa.nulls(n, pa.list_(pa.float32()))
    # NaN is an unknown confidence (labels registered without scores: stored as null); infinity is a bug
    confidence = np.asarray(preds.confidence, dtype=np.float64)
    if n and np.isinf(confidence).any():
        raise ValueError(f"sample {sample_ids[int(np.flatnonzero(np.isinf(confidence))[0])]}: "
                         "the model's confidence is infinite")
    detections = (pa.array([[dict(label=d.label, bbox=list(d.bbox), confidence=d.confidence) for d in dets]
                            for dets in preds.detections], PREDICTIONS.field("detections").type)
                  if preds.detections is not None else pa.nulls(n, PREDICTIONS.field("detections").type))
    return pa.table({"run_id": pa.array([run_id] * n, pa.string()), "sample_id": pa.array(sample_ids, pa.string()),
                     "label": pa.array(preds.labels, pa.string()),
                     "confidence": pa.array(preds.confidence, pa.float32(), from_pandas=True),  # NaN: unknown
                     "logits": logits, "detections": detections}, schema=PREDICTIONS)


ROW_BUILDERS: dict[str, Callable[..., pa.Table]] = {
    "embeddings": embedding_rows, "patch_embeddings": patch_rows, "predictions": prediction_rows}


def _in_batches(model, step, pixels: np.ndarray, empty) -> np.ndarray:
    out = [step(pixels[i:i + model.batch_size]) for i in range(0, len(pixels), model.batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else empty()


class ModelActor:
    """Keeps one loaded model for its life; turns each decoded shard into rows and stages them as its file.

    A shard whose rows are refused (the model's output has NaN, infinite or overflowing values, or a wrong
    shape: :func:`brain.vectors.to_list_array`) is not staged; its ``error`` column says why, naming the
    sample, and the driver fails the run with that message (raised here, Ray would bury it in its own
    wrapper and remote traceback).
    """

    def __init__(self, *, table: str, model_name: str | None, model_kwargs: dict, lake: Lake, run_id: str,
                 options: dict):
        self.model = load_model(model_name, **model_kwargs)
        self.lake, self.table, self.run_id, self.options = lake, table, run_id, options
        self.build = ROW_BUILDERS[table]

    def __call__(self, batch: pa.Table) -> pa.Table:
        shards, counts, errors = [], [], []
        for row in batch.to_pylist():
            shards.append(row["shard"])
            try:
                rows = self.build(self.model, _decoded_batch(row), self.run_id, self.options)
            except ValueError as err:
                counts.append(0)
                errors.append(plain_text(str(err)))
                continue
            self.lake.stage(self.table, self.run_id, rows, name=f"shard-{row['shard']}")
            counts.append(rows.num_rows)
            errors.append(None)
        return pa.table({"shard": pa.array(shards, pa.string()), "rows": pa.array(counts, pa.int64()),
                         "error": pa.array(errors, pa.string())})


def raise_refused(outcomes: pa.Table) -> None:
    """Fail the run with the first refused shard's message (see :class:`ModelActor`)."""
    refused = [e for e in outcomes["error"].to_pylist() if e is not None]
    if refused:
        more = f" ({len(refused)} shards refused)" if len(refused) > 1 else ""
        raise ValueError(refused[0] + more)


@dataclass
class PipelineSpec:
    """One job's use of the pipeline."""

    table: str  # embeddings | patch_embeddings | predictions
    brain_key: str
    method: str
    items: pa.Table  # sample_id, uri[, patch_index, label, bbox]
    model_name: str | None
    model_kwargs: dict[str, Any]
    shard_size: int
    resume: bool
    options: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # input run ids by role
    settings: dict[str, Any] = field(default_factory=dict)  # what must match for a run to be resumed
    in_process: bool = False  # run the same stages in this process, without Ray (small increments)
    sample_filter: str | None = None  # the run's view of `samples` (default: its dataset)
    finish: Callable[[Lake, "runs.Run"], None] | None = None  # stage more rows (carried over), save artifacts


def resumable_run(lake: Lake, brain_key: str, dataset: str, settings: dict[str, Any], policy) -> str | None:
    """The newest run with this brain key if it failed or was abandoned and was started with the same settings."""
    runs.abandon_stale(lake, brain_key=brain_key, policy=policy)
    table = runs.list_runs(lake)
    table = table.filter(pc.and_(pc.equal(table["brain_key"], brain_key), pc.equal(table["dataset"], dataset)))
    if table.num_rows == 0:
        return None
    newest = table.slice(table.num_rows - 1, 1).to_pylist()[0]
    if newest["status"] not in ("failed", "abandoned"):
        return None
    return newest["run_id"] if json.loads(newest["config"]).get("_resume_settings") == settings else None


def staged_shards(lake: Lake, table: str, run_id: str) -> set[str]:
    """Ids of the shards a run has staged in ``table`` (files ``shard-<id>.parquet``)."""
    names = (f.rsplit("/", 1)[-1] for f in lake.staged_files(table, run_id))
    return {n[len("shard-"):-len(".parquet")] for n in names if n.startswith("shard-")}


def run_pipeline(conf: Conf, spec: PipelineSpec) -> str:
    from jobs.engines import ray_init, ray_where, use_code_paths, versions

    lake = Lake.from_conf(conf)
    use_code_paths(conf)
    if spec.items.num_rows == 0 and spec.finish is None:
        raise ValueError(f"nothing to run {spec.method} on in dataset {conf.dataset!r} of {lake.uri}")
    get_model(spec.model_name, **spec.model_kwargs)  # a missing package or weights file fails here, before Ray
    settings = json.loads(json.dumps(spec.settings, default=str))
    shards = shard_items(spec.items, spec.shard_size, first_shard_size=spec.model_kwargs.get("batch_size"))
    run_id = resumable_run(lake, spec.brain_key, conf.dataset, settings, conf.runs) if spec.resume else None
    if run_id and not staged_shards(lake, spec.table, run_id) <= {sid for sid, _ in shards}:
        log.info("%s: run %s staged shards of other samples (the dataset changed): starting afresh",
                 spec.method, run_id)
        run_id = None
    started = time.perf_counter()
    if spec.in_process:
        ray, gpus, executed_on = None, 0, f"driver host={socket.gethostname()}"
    else:
        ray = ray_init(conf)
        executed_on = ray_where()
        gpus = conf.ray.num_gpus_per_actor
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    with runs.track(lake, brain_key=spec.brain_key, method=spec.method, dataset=conf.dataset,
                    config={**conf.model_dump(), "_resume_settings": settings}, inputs=spec.inputs,
                    engine_versions=versions("torchvision"), executed_on=executed_on, policy=conf.runs,
                    sample_filter=spec.sample_filter, run_id=run_id, keep_staged=spec.resume) as run:
        done = staged_shards(lake, spec.table, run.run_id)
        todo = [(sid, part) for sid, part in shards if sid not in done]
        log.info("%s: %d shards, %d already staged (resumed run %s), %d to compute",
                 spec.method, len(shards), len(shards) - len(todo), run_id, len(todo))
        common = dict(model_name=spec.model_name, model_kwargs=spec.model_kwargs, lake=lake,
                      run_id=run.run_id)
        sizes = {sid: part.num_rows for sid, part in todo}

        def items_done() -> int:  # the actors stage one file per finished shard
            return sum(sizes.get(sid, 0) for sid in staged_shards(lake, spec.table, run.run_id))

        with progress.poll(items_done, desc=spec.method, total=sum(sizes.values()), unit="samples"):
            if todo and spec.in_process:
                actor = ModelActor(**common, table=spec.table, options=spec.options)
                for sid, part in todo:
                    raise_refused(actor(decode_shard(pa.table({"shard": [sid], "items": [_ipc(part)]}), **common,
                                                     dataset=conf.dataset, limits=conf.images.limits())))
            elif todo:
                raise_refused(_on_ray(ray, todo, common, conf, spec, gpus))
        if spec.finish:
            spec.finish(lake, run)
        run.metrics["shards_reused"] = float(len(shards) - len(todo))
    log.info("%s: %d rows (%d not decodable) in %.1f s with model %s on %s, gpus/actor=%s",
             spec.method, run.rows_written.get(spec.table, 0), run.rows_written.get("ingest_errors", 0),
             time.perf_counter() - started, spec.model_name or "default", executed_on, gpus)
    return run.run_id


def _on_ray(ray, todo: list[tuple[str, pa.Table]], common: dict, conf: Conf, spec: PipelineSpec,
            gpus: float) -> pa.Table:
    """The shards through decode tasks and the model actors: one outcome row per shard (see :class:`ModelActor`)."""
    from jobs.engines import use_ray_data

    use_ray_data(ray)
    outcomes = (ray.data.from_items([{"shard": sid, "items": _ipc(part)} for sid, part in todo],
                                    override_num_blocks=len(todo))
                .map_batches(decode_shard, batch_format="pyarrow", batch_size=1,
                             fn_kwargs=dict(**common, dataset=conf.dataset, limits=conf.images.limits()))
                .map_batches(ModelActor, fn_constructor_kwargs=dict(**common, table=spec.table, options=spec.options),
                             compute=ray.data.ActorPoolStrategy(size=conf.ray.num_actors), batch_size=1,
                             batch_format="pyarrow", num_cpus=conf.ray.actor_num_cpus, num_gpus=gpus)
                .materialize())
    return pa.Table.from_pylist(outcomes.take_all(), schema=pa.schema([("shard", pa.string()), ("rows", pa.int64()),
                                                                       ("error", pa.string())]))


def model_kwargs(conf: Conf, model_name: str | None, batch_size: int, **extra) -> dict[str, Any]:
    """Keyword arguments for ``get_model`` from the config's ``models`` section."""
    kwargs: dict[str, Any] = dict(batch_size=batch_size, **extra)
    if model_name and model_name != "thumbnail":
        kwargs.update({k: v for k, v in dict(weights_dir=conf.models.weights_dir, num_threads=conf.models.num_threads,
                                             input_size=conf.models.input_size).items() if v is not None})
        if conf.models.skip_requirements:
            kwargs["skip_requirements"] = True
    return kwargs
