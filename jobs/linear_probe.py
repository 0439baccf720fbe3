"""Train a logistic regression on an embeddings run and store its out-of-fold predictions with logits.

    brain linear-probe [--set linear_probe.folds=5]
    embeddings (linear_probe.embeddings_key) + samples.label → brain.models.linear_probe → predictions
    (brain key linear_probe.brain_key; class names in the run's artifact classes.json)

Runs on the driver: a linear model over N×D floats needs no cluster at demo scale.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.vectors import to_matrix
from brain.models import Predictions
from brain.models.linear_probe import out_of_fold_logits
from jobs.model_pipeline import predictions_table
from jobs.registry import Job


def run(conf: Conf) -> str:
    lake, cfg = Lake.from_conf(conf), conf.linear_probe
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    emb = plain_strings(lake.read("embeddings", filter=pc.field("run_id") == source["run_id"]))
    samples = plain_strings(lake.read("samples", columns=["sample_id", "label"],
                                      filter=pc.field("dataset") == conf.dataset))
    label_of = dict(zip(samples["sample_id"].to_pylist(), samples["label"].to_pylist()))
    ids = [s for s in emb["sample_id"].to_pylist() if label_of.get(s) is not None]
    vectors = emb.filter(pc.is_in(emb["sample_id"], value_set=pa.array(ids)))
    ids = vectors["sample_id"].to_pylist()
    matrix = to_matrix(vectors["vector"], ids, context=f"embeddings run {source['run_id']}")
    with runs.track(lake, brain_key=cfg.brain_key, method="predictions", dataset=conf.dataset,
                    config={**conf.model_dump(), "model": "linear_probe"},
                    inputs={"embeddings": source["run_id"]}, policy=conf.runs) as run:
        logits, classes = out_of_fold_logits(matrix, [label_of[s] for s in ids], folds=cfg.folds)
        preds = Predictions.from_logits(logits, classes)
        rows = predictions_table(preds, ids, run.run_id, store_logits=True)
        run.write("predictions", rows)
        run.metrics["oof_accuracy"] = float(sum(p == label_of[s] for p, s in zip(preds.labels, ids)) / len(ids))
        run.write_artifact("classes.json", json.dumps(classes).encode())
    return run.run_id


JOB = Job(name="linear-probe", engine="driver", help="predictions with logits from a logistic regression on embeddings, out of fold",
          reads=("embeddings", "samples"),
          writes=("predictions",),
          run=run)


if __name__ == "__main__":
    JOB.main()
