"""Patch embeddings on Ray Data: embed each object's crop as its own row of `patch_embeddings`.

    boxes (a predictions run's detections, or samples.attributes.FIELD ground truth)
      → one row per box (brain.patches) joined to its image's uri
      → decode tasks crop the boxes and preprocess → ModelActor embeds → staged shards → one commit

Rows: run_id, sample_id, patch_index (the box's position in the sample's list), label, bbox, vector.
`patches.source` is the brain key of a predictions run, or `attributes.FIELD` for boxes in the
manifest's columns (a JSON list of {label, bbox: [x, y, w, h] relative}).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.patches import detections_from_attributes, patches_from_detections
from jobs.model_pipeline import PipelineSpec, model_kwargs, run_pipeline
from jobs.registry import Job


def boxes(lake: Lake, conf: Conf) -> tuple[pa.Table, str | None]:
    """The patches to embed and the id of the predictions run they came from (None for attributes)."""
    source = conf.patches.source
    samples = plain_strings(lake.read("samples", columns=["sample_id", "uri", "attributes"],
                                      filter=pc.field("dataset") == conf.dataset))
    if source.startswith("attributes."):
        field = source[len("attributes."):]
        patches = patches_from_detections(samples["sample_id"].to_pylist(),
                                          detections_from_attributes(samples["attributes"].to_pylist(), field),
                                          min_confidence=conf.patches.min_confidence)
        input_run = None
    else:
        run_id = runs.latest_succeeded(lake, source)["run_id"]
        preds = plain_strings(lake.read("predictions", columns=["sample_id", "detections"],
                                        filter=pc.field("run_id") == run_id))
        patches = patches_from_detections(preds["sample_id"].to_pylist(), preds["detections"].to_pylist(),
                                          min_confidence=conf.patches.min_confidence)
        input_run = run_id
    uri_of = dict(zip(samples["sample_id"].to_pylist(), samples["uri"].to_pylist()))
    patches = patches.filter(pa.array([s in uri_of for s in patches["sample_id"].to_pylist()], pa.bool_()))
    return patches.append_column("uri", pa.array([uri_of[s] for s in patches["sample_id"].to_pylist()],
                                                 pa.string())), input_run


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    items, input_run = boxes(lake, conf)
    if items.num_rows == 0:
        raise ValueError(f"no boxes in {conf.patches.source!r} for dataset {conf.dataset!r}: nothing to embed")
    cfg = conf.patches
    kwargs = model_kwargs(conf, cfg.model, cfg.batch_size)
    return run_pipeline(conf, PipelineSpec(
        table="patch_embeddings", brain_key=cfg.brain_key, method="patch_embeddings", items=items,
        model_name=cfg.model, model_kwargs=kwargs, shard_size=cfg.shard_size, resume=cfg.resume,
        inputs={"predictions": input_run} if input_run else {},
        settings=dict(model=cfg.model, kwargs=kwargs, shard_size=cfg.shard_size, source=cfg.source,
                      min_confidence=cfg.min_confidence)))


JOB = Job(name="patch-embeddings", engine="ray", help="embeddings of object patches (boxes) on Ray Data",
          reads=("samples", "predictions"),
          writes=("patch_embeddings", "ingest_errors"),
          run=run)


if __name__ == "__main__":
    JOB.main()
