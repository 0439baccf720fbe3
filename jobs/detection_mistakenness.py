"""Detection mistakenness: ground-truth boxes vs a detector's predictions (math in brain.methods.mistakenness).

    samples.attributes[FIELD] (ground truth: [{label, bbox [x,y,w,h] relative}, …])
    ⋈ predictions.detections (a predictions run: [{label, bbox, confidence}, …])
      → brain.methods.mistakenness.detection (greedy class-agnostic matching by confidence, IoU ≥ 0.5)
      → `detection_mistakenness` (per sample: max scores, counts of missing / spurious)
      → `detection_objects` (per object: scores, IoU, possible_missing / possible_spurious)
      → with `copy_missing`: `detection_labels`, the ground truth plus the possibly missing
        objects as a new labels version (the samples' own labels are never changed)
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.methods.mistakenness import Detections, detection
from brain.patches import detections_from_attributes
from brain.schemas import DETECTION, DETECTION_OBJECTS
from jobs.registry import Job

log = logging.getLogger("jobs.detection_mistakenness")


def as_detections(boxes: list[dict] | None, *, name: str, with_confidence: bool) -> Detections:
    """A list of {label, bbox[, confidence]} dicts → :class:`Detections` (None: no objects)."""
    boxes = boxes or []
    for i, box in enumerate(boxes):
        missing = {"label", "bbox", *(["confidence"] if with_confidence else [])} - set(box)
        if missing:
            raise ValueError(f"{name}[{i}] has no {sorted(missing)}")
    return Detections(boxes=np.array([b["bbox"] for b in boxes], dtype=np.float64).reshape(-1, 4),
                      labels=[b["label"] for b in boxes],
                      confidence=np.array([b["confidence"] for b in boxes], dtype=np.float64)
                      if with_confidence else None)


def _objects(run_id: str, key: str, sample_id: str, source: str, dets: Detections, **columns) -> list[dict]:
    n = len(dets.labels)
    rows = []
    for i in range(n):
        row = dict(run_id=run_id, brain_key=key, sample_id=sample_id, source=source, object_index=i,
                   label=dets.labels[i], bbox=[float(v) for v in dets.boxes[i]],
                   confidence=None if dets.confidence is None else float(dets.confidence[i]))
        row.update({name: (None if values is None else values[i].item()) for name, values in columns.items()})
        rows.append(row)
    return rows


def run(conf: Conf) -> str:
    lake, cfg = Lake.from_conf(conf), conf.label_quality
    if not cfg.ground_truth.startswith("attributes."):
        raise ValueError(f"label_quality.ground_truth must name a samples attribute, e.g. attributes.detections; "
                         f"got {cfg.ground_truth!r}")
    field = cfg.ground_truth[len("attributes."):]
    source = runs.latest_succeeded(lake, cfg.predictions_key)
    samples = plain_strings(lake.read("samples", columns=["sample_id", "attributes"],
                                      filter=pc.field("dataset") == conf.dataset)).sort_by("sample_id")
    preds = plain_strings(lake.read("predictions", columns=["sample_id", "detections"],
                                    filter=pc.field("run_id") == source["run_id"]))
    predicted = dict(zip(preds["sample_id"].to_pylist(), preds["detections"].to_pylist()))
    ids = [s for s in samples["sample_id"].to_pylist() if s in predicted]
    if not ids:
        raise ValueError(f"predictions run {cfg.predictions_key!r} has no rows for dataset {conf.dataset!r}")
    truth_of = dict(zip(samples["sample_id"].to_pylist(),
                        detections_from_attributes(samples["attributes"].to_pylist(), field)))
    truth = [as_detections(truth_of[s], name=f"sample {s}: attributes.{field}", with_confidence=False) for s in ids]
    preds = [as_detections(predicted[s], name=f"sample {s}: predictions.detections", with_confidence=True)
             for s in ids]
    classes = sorted({label for dets in truth + preds for label in dets.labels})
    result = detection(truth, preds, classes=classes, iou_threshold=cfg.iou_threshold,
                       missing_confidence=cfg.missing_confidence)
    key = cfg.detection_key
    with runs.track(lake, brain_key=key, method="detection_mistakenness", dataset=conf.dataset,
                    inputs={"predictions": source["run_id"]}, config=conf.model_dump(), policy=conf.runs) as run:
        per_sample = pa.table({"run_id": [run.run_id] * len(ids), "brain_key": [key] * len(ids), "sample_id": ids,
                               "mistakenness": result.mistakenness, "mistakenness_loc": result.mistakenness_loc,
                               "num_missing": result.num_missing, "num_spurious": result.num_spurious})
        objects = []
        for i, sample_id in enumerate(ids):
            objects += _objects(run.run_id, key, sample_id, "ground_truth", truth[i],
                                mistakenness=result.gt_mistakenness[i], mistakenness_loc=result.gt_mistakenness_loc[i],
                                iou=result.gt_iou[i], possible_missing=None,
                                possible_spurious=result.possible_spurious[i])
            objects += _objects(run.run_id, key, sample_id, "prediction", preds[i], mistakenness=None,
                                mistakenness_loc=None, iou=None, possible_missing=result.possible_missing[i],
                                possible_spurious=None)
        run.write("detection_mistakenness", per_sample)
        run.write("detection_objects", pa.Table.from_pylist(objects, schema=DETECTION_OBJECTS))
        if cfg.copy_missing:
            labels = [list(truth_of[s] or []) + [d for d, m in zip(predicted[s] or [], result.possible_missing[i]) if m]
                      for i, s in enumerate(ids)]
            run.write("detection_labels", pa.table({
                "run_id": [run.run_id] * len(ids), "sample_id": ids,
                "detections": pa.array([[dict(label=d["label"], bbox=d["bbox"], confidence=d.get("confidence"))
                                         for d in dets] for dets in labels], pa.list_(DETECTION))}))
        run.metrics.update(possible_missing=float(result.num_missing.sum()),
                           possible_spurious=float(result.num_spurious.sum()))
    log.info("detection mistakenness: %d samples, %d possibly missing, %d possibly spurious objects", len(ids),
             int(result.num_missing.sum()), int(result.num_spurious.sum()))
    return run.run_id


JOB = Job(name="detection-mistakenness", engine="driver", help="ground-truth boxes vs a detector's predictions",
          reads=("predictions", "samples"),
          writes=("detection_mistakenness", "detection_objects", "detection_labels"),
          run=run)


if __name__ == "__main__":
    JOB.main()
