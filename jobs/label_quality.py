"""Label-quality jobs: hardness and mistakenness from a predictions run (math in brain.methods).

    predictions (logits; class order in the run's classes.json) ⋈ samples (given labels) [+ kNN run]
      → brain.methods.hardness.hardness                   → `hardness` (jobs.hardness: needs no labels)
      → brain.methods.mistakenness.classification/label_issues → `mistakenness`
      → Spark: per-class counts, issues, mean score; given × suggested confusion
        → `label_quality_classes`, `label_confusion`
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake
from brain.methods import mistakenness as mistakenness_method
from jobs.predictions import ScoredSet, read_predictions
from jobs.registry import Job

log = logging.getLogger("jobs.label_quality")


def label_indices(scored: ScoredSet) -> np.ndarray:
    """Given labels as class indices; an unknown class name is an error naming the sample."""
    position = {name: i for i, name in enumerate(scored.classes)}
    out = np.empty(len(scored.labels), dtype=np.int64)
    for i, (sample_id, label) in enumerate(zip(scored.sample_ids, scored.labels)):
        if label not in position:
            raise ValueError(f"sample {sample_id}: label {label!r} is not one of the predictions' classes "
                             f"{scored.classes}")
        out[i] = position[label]
    return out


def labelled(scored: ScoredSet, dataset: str) -> tuple[ScoredSet, np.ndarray]:
    """The samples that carry a label (the others cannot be checked), with their class indices."""
    keep = [i for i, label in enumerate(scored.labels) if label is not None]
    if not keep:
        raise ValueError(f"dataset {dataset!r} has no labelled samples to check")
    scored = ScoredSet([scored.sample_ids[i] for i in keep], [scored.labels[i] for i in keep],
                       scored.logits[keep], scored.classes, scored.run_id)
    return scored, label_indices(scored)


def knn_rows(lake: Lake, run: dict, sample_ids: list[str]) -> np.ndarray:
    """The kNN run's neighbour lists as row positions in ``sample_ids`` (-1: not in the set)."""
    neighbors_key = run["brain_key"]
    table = lake.read("neighbors", columns=["sample_id", "neighbor_ids"], filter=pc.field("run_id") == run["run_id"])
    lists = dict(zip(table["sample_id"].to_pylist(), table["neighbor_ids"].to_pylist()))
    position = {sid: i for i, sid in enumerate(sample_ids)}
    missing = [sid for sid in sample_ids if sid not in lists]
    if missing:
        raise ValueError(f"kNN run {neighbors_key!r} has no neighbours for sample {missing[0]} "
                         f"({len(missing)} samples missing): run it on the same dataset")
    k = max(len(v) for v in lists.values())
    out = np.full((len(sample_ids), k), -1, dtype=np.int64)
    for i, sid in enumerate(sample_ids):
        rows = [position.get(n, -1) for n in lists[sid]]
        out[i, :len(rows)] = rows
    return out


def run_mistakenness(conf: Conf) -> str:
    """The mistakenness run alone (its predictions read here)."""
    lake = Lake.from_conf(conf)
    started = time.perf_counter()
    scored, labels = labelled(read_predictions(lake, conf.label_quality.predictions_key, conf.dataset), conf.dataset)
    return score_mistakenness(lake, conf, scored, labels, read_s=time.perf_counter() - started)


def score_mistakenness(lake: Lake, conf: Conf, scored: ScoredSet, labels: np.ndarray, *, read_s: float = 0.0) -> str:
    """The mistakenness run of labelled predictions already read (class indices ``labels``; ``read_s``: the
    seconds reading them took)."""
    from pyspark.sql import functions as F

    from jobs.engines import spark_session, spark_where
    from jobs.spark_lake import read_staged, write_staged

    cfg = conf.label_quality
    started = time.perf_counter()
    knn_run = runs.latest_succeeded(lake, cfg.neighbors_key) if cfg.neighbors_key else None
    knn = knn_rows(lake, knn_run, scored.sample_ids) if knn_run else None
    inputs = {"predictions": scored.run_id, **({"neighbors": knn_run["run_id"]} if knn_run else {})}
    prepare_s = read_s + time.perf_counter() - started  # reading the inputs is work that grows with N
    spark = spark_session(conf)  # its attach time is counted apart (engine_start_s)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="mistakenness", dataset=conf.dataset,
                    inputs=inputs, config=conf.model_dump(), policy=conf.runs, executed_on=spark_where(spark),
                    prepare_s=prepare_s) as run:
        score = mistakenness_method.classification(scored.logits, labels, knn, method=cfg.method)
        issues = mistakenness_method.label_issues(scored.logits, labels, knn)
        classes = np.asarray(scored.classes, dtype=object)
        rows = pa.table({
            "run_id": [run.run_id] * len(score), "brain_key": [cfg.brain_key] * len(score),
            "sample_id": scored.sample_ids, "given_label": scored.labels,
            "suggested_label": classes[issues.suggested_label].tolist(),
            "mistakenness": score, "is_issue": issues.is_issue})
        run.write("mistakenness", rows)
        run.metrics["issues"] = float(issues.is_issue.sum())

        frame = read_staged(spark, run, "mistakenness")
        per_class = frame.groupBy(F.col("given_label").alias("label")).agg(
            F.count("*").alias("samples"), F.sum(F.col("is_issue").cast("long")).alias("issues"),
            F.avg("mistakenness").alias("mean_mistakenness"))
        confusion = frame.groupBy("given_label", "suggested_label").agg(F.count("*").alias("samples"))
        for table, result in (("label_quality_classes", per_class), ("label_confusion", confusion)):
            write_staged(result.select(F.lit(run.run_id).alias("run_id"), F.lit(cfg.brain_key).alias("brain_key"),
                                       "*"), run, table)
    log.info("mistakenness: %d samples scored (%s, %s), %d flagged, in %.1f s", len(score), cfg.method,
             "with kNN labels" if knn is not None else "logits alone", int(issues.is_issue.sum()),
             time.perf_counter() - started)
    return run.run_id


def run(conf: Conf) -> str:
    """Hardness, then mistakenness (with its Spark aggregates); returns the mistakenness run id.

    The predictions are read once and checked first (logits present and as wide as the classes,
    every given label one of the classes), so bad predictions fail before either table is written.
    """
    from jobs import hardness

    lake = Lake.from_conf(conf)
    started = time.perf_counter()
    scored = read_predictions(lake, conf.label_quality.predictions_key, conf.dataset)
    with_labels, labels = labelled(scored, conf.dataset)
    hardness.score(lake, conf, scored, prepare_s=time.perf_counter() - started)  # unlabelled samples too
    return score_mistakenness(lake, conf, with_labels, labels)


JOB = Job(name="label-quality", engine="spark", help="hardness and mistakenness of a predictions run (+ Spark per-class tables)",
          reads=("predictions", "samples", "neighbors"),
          writes=("hardness", "mistakenness", "label_quality_classes", "label_confusion"),
          run=run)


if __name__ == "__main__":
    JOB.main()
