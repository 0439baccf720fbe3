"""Register a model's predictions computed elsewhere as a predictions run (no model, no Ray).

    brain register-predictions --file preds.parquet --classes-file classes.txt
    brain register-predictions --file preds.csv --classes cat,dog      # logits/detections as JSON lists
    brain register-predictions --file logits.npy --ids ids.txt --classes-file classes.txt

One row per sample: its sample id (or its uri), and any of label, confidence, logits (in the
order of the class names), detections ({label, bbox [x, y, w, h] relative, confidence}). The
checks are register-embeddings': every id a sample of the dataset, none twice, no missing or
non-finite value, and the errors name the sample. The rows go to `predictions` (the class
names to the run's classes.json), as an apply-model run would write them, so hardness,
mistakenness and detection mistakenness read them (FiftyOne: "add your model's predictions").
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.compute as pc

from brain import register, runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.results import CLASSES_ARTIFACT
from jobs.model_pipeline import predictions_table
from jobs.registry import Job, Option, comma_list


def class_names(cfg) -> list[str] | None:
    if cfg.classes and cfg.classes_file:
        raise ValueError("give register_predictions.classes or classes_file, not both")
    if cfg.classes_file:
        return [line.strip() for line in Path(cfg.classes_file).read_text().splitlines() if line.strip()]
    return list(cfg.classes) if cfg.classes else None


def run(conf: Conf) -> str:
    import json

    cfg = conf.register_predictions
    lake = Lake.from_conf(conf)
    if not cfg.file:
        raise ValueError("register_predictions.file (--file) is required")
    started = time.perf_counter()
    samples = plain_strings(lake.read("samples", columns=["sample_id", "uri"],
                                      filter=pc.field("dataset") == conf.dataset))
    if samples.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}: run `brain ingest` first")
    table = register.read_predictions_file(cfg.file, ids_path=cfg.ids_file, id_column=cfg.id_column)
    by = cfg.id_column if cfg.id_column in table.column_names else cfg.uri_column
    if by not in table.column_names:
        raise ValueError(f"{cfg.file}: no column {cfg.id_column!r} or {cfg.uri_column!r} naming the samples "
                         f"(columns: {table.column_names})")
    ids = register.resolve_ids([str(v) for v in table[by].to_pylist()], by="uri" if by == cfg.uri_column else
                               "sample_id", samples=samples, dataset=conf.dataset)
    register.check_ids(ids, set(samples["sample_id"].to_pylist()), dataset=conf.dataset, what="the predictions")
    classes = class_names(cfg)
    preds = register.check_predictions(table, ids, classes)
    with runs.track(lake, brain_key=cfg.brain_key, method="predictions", dataset=conf.dataset,
                    config={**conf.model_dump(), "model": f"registered:{cfg.file}"}, policy=conf.runs,
                    prepare_s=time.perf_counter() - started) as run:
        run.write("predictions", predictions_table(preds, ids, run.run_id, store_logits=True))
        if classes:
            run.write_artifact(CLASSES_ARTIFACT, json.dumps(classes).encode())
    return run.run_id


JOB = Job(name="register-predictions", engine="driver", help="store a model's predictions computed elsewhere",
          reads=("samples",),
          writes=("predictions",),
          run=run,
          options=(Option("--file", "register_predictions.file",
                          ".parquet/.csv (sample_id or uri; label, confidence, logits, detections) "
                          "or .npy logits [N, C] (with --ids)"),
                   Option("--ids", "register_predictions.ids_file", "for .npy: a text file, one sample id per line"),
                   Option("--classes", "register_predictions.classes", "class names in logit order, comma-separated",
                          parse=comma_list),
                   Option("--classes-file", "register_predictions.classes_file",
                          "class names in logit order, one per line"),
                   Option("--brain-key", "register_predictions.brain_key",
                          "brain key of the run (default: register_predictions.brain_key)")))


if __name__ == "__main__":
    JOB.main()
