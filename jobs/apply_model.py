"""Apply a model to a dataset on Ray Data and store its predictions in `predictions`.

    samples → decode tasks → ModelActor (model.predict, in batches of apply_model.batch_size)
      → one staged file per shard → one commit; the class names go to the run's artifact classes.json

Rows: run_id, sample_id, label, confidence, logits (classifiers, when `store_logits`),
detections (detectors: label, bbox [x, y, w, h] relative, confidence ≥ `confidence_thresh`).
A classifier's label less confident than `confidence_thresh` is stored as null (as FiftyOne does).
Hardness and mistakenness read these rows by run (`brain runs info <brain_key>`).
"""

from __future__ import annotations

import json

import pyarrow.compute as pc

from brain.config import Conf
from brain.lake import Lake
from brain.models import get_model
from jobs.model_pipeline import PipelineSpec, model_kwargs, run_pipeline
from jobs.registry import Job


def run(conf: Conf) -> str:
    cfg = conf.apply_model
    lake = Lake.from_conf(conf)
    samples = lake.read("samples", columns=["sample_id", "uri"], filter=pc.field("dataset") == conf.dataset)
    if samples.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}: run `brain ingest` first")
    extra = {"classes": cfg.classes} if cfg.classes else {}
    kwargs = model_kwargs(conf, cfg.model, cfg.batch_size, **extra)
    model = get_model(cfg.model, **kwargs)
    detector = model.task == "detection"
    if detector and cfg.confidence_thresh is not None:
        kwargs["confidence_thresh"] = cfg.confidence_thresh
    elif not detector and not model.has_logits:
        raise ValueError(f"model {model.name!r} does not predict classes (task {model.task!r}): set apply_model.model "
                         "to a zoo classifier or detector (`brain models list`), or a TorchScript/ONNX classifier "
                         "with apply_model.classes")
    classes = model.classes

    def save_classes(lake: Lake, run) -> None:
        run.write_artifact("classes.json", json.dumps(classes).encode())

    return run_pipeline(conf, PipelineSpec(
        table="predictions", brain_key=cfg.brain_key, method="predictions", items=samples, model_name=cfg.model,
        model_kwargs=kwargs, shard_size=cfg.shard_size, resume=cfg.resume,
        options=dict(store_logits=cfg.store_logits, label_thresh=None if detector else cfg.confidence_thresh),
        finish=save_classes,
        settings=dict(model=cfg.model, kwargs=kwargs, shard_size=cfg.shard_size, store_logits=cfg.store_logits)))


JOB = Job(name="apply-model", engine="ray", help="predictions (labels, confidence, logits, detections) on Ray Data",
          reads=("samples",),
          writes=("predictions", "ingest_errors"),
          run=run)


if __name__ == "__main__":
    JOB.main()
