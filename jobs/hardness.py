"""Hardness of a predictions run: the entropy of each sample's softmax (math in brain.methods.hardness).

    brain hardness [--set label_quality.predictions_key=predictions --set label_quality.hardness_key=hardness]
    predictions (logits; class order in the run's classes.json) of the dataset's samples → `hardness`

Only the logits are read: samples need no label, and the predictions' classes need not be the
dataset's labels (a model trained on other classes still says how unsure it is), as FiftyOne's
``compute_hardness``. `brain label-quality` runs it before mistakenness.
"""

from __future__ import annotations

import time

import pyarrow as pa

from brain import runs
from brain.config import Conf
from brain.lake import Lake
from brain.methods import hardness as hardness_method
from jobs.predictions import ScoredSet, read_predictions
from jobs.registry import Job


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    started = time.perf_counter()
    scored = read_predictions(lake, conf.label_quality.predictions_key, conf.dataset)
    return score(lake, conf, scored, prepare_s=time.perf_counter() - started)


def score(lake: Lake, conf: Conf, scored: ScoredSet, *, prepare_s: float | None = None) -> str:
    """The hardness run of predictions already read (``prepare_s``: the seconds reading them took)."""
    cfg = conf.label_quality
    with runs.track(lake, brain_key=cfg.hardness_key, method="hardness", dataset=conf.dataset,
                    inputs={"predictions": scored.run_id}, config=conf.model_dump(), policy=conf.runs,
                    prepare_s=prepare_s) as run:
        scores = hardness_method.hardness(scored.logits)
        rows = pa.table({"run_id": [run.run_id] * len(scores), "brain_key": [cfg.hardness_key] * len(scores),
                         "sample_id": scored.sample_ids, "hardness": scores})
        run.write("hardness", rows)
    return run.run_id


JOB = Job(name="hardness", engine="driver", help="hardness (entropy of the logits) of a predictions run; needs no labels",
          reads=("predictions", "samples"),
          writes=("hardness",),
          run=run)


if __name__ == "__main__":
    JOB.main()
