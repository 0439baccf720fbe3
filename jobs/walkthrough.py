"""The label-mistake walkthrough on data we have offline (FiftyOne's, on the digits).

    digits PNGs → a copy of the dataset with 20% of its labels flipped to another class
      (seeded; the true label and a `flipped` flag kept in `samples.attributes`)
    → embeddings + kNN graph → a model trained on the noisy labels with out-of-fold
      predictions (k-fold logistic regression on the embeddings, jobs.linear_probe: every
      sample is scored by a model that never saw it) → `predictions` with logits
    → hardness and mistakenness
    → how many flipped labels are among the top-k mistakenness samples (k = number flipped)
      and the AUROC, recorded as the walkthrough run's metrics.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brain import ingest, runs
from brain.config import Conf
from brain.lake import Lake
from jobs.registry import Job

log = logging.getLogger("jobs.walkthrough")


def flip_labels(labels: list[str], classes: list[str], *, fraction: float, seed: int) -> tuple[list[str], np.ndarray]:
    """Move a seeded ``fraction`` of labels to a different class, uniformly; (noisy labels, flipped mask)."""
    rng = np.random.default_rng(seed)
    index = {c: i for i, c in enumerate(classes)}
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False)] = True
    noisy = list(labels)
    for i in np.flatnonzero(flipped):
        noisy[i] = classes[(index[labels[i]] + rng.integers(1, len(classes))) % len(classes)]
    return noisy, flipped


def precision_at_k(scores: np.ndarray, is_mistake: np.ndarray) -> float:
    """Fraction of true mistakes among the k highest scores, k = number of mistakes."""
    k = int(is_mistake.sum())
    return float(is_mistake[np.argsort(-scores, kind="stable")[:k]].mean()) if k else float("nan")


def write_noisy_manifest(source: Path, manifest: Path, *, fraction: float, seed: int) -> int:
    files = ingest.discover_folder(source)
    classes = sorted({f.label for f in files})
    noisy, flipped = flip_labels([f.label for f in files], classes, fraction=fraction, seed=seed)
    pq.write_table(pa.table({"uri": [f.uri for f in files], "label": noisy, "split": [f.split for f in files],
                             "true_label": [f.label for f in files], "flipped": flipped}), manifest)
    return int(flipped.sum())


def run(conf: Conf) -> str:
    from jobs import embed, hardness, ingest as ingest_job, label_quality, linear_probe, neighbors
    from jobs.digits import write_digits

    lake, cfg = Lake.from_conf(conf), conf.walkthrough
    ds = cfg.dataset
    source = lake.local_folder("raw") / "digits"
    write_digits(source)
    manifest = lake.local_folder("raw") / f"{ds}-manifest.parquet"
    write_noisy_manifest(source, manifest, fraction=cfg.noise_fraction, seed=cfg.seed)

    conf = conf.model_copy(deep=True)
    conf.dataset = ds
    conf.ingest.source, conf.ingest.manifest = None, str(manifest)
    conf.embed.brain_key = f"{ds}_embeddings"
    conf.neighbors.brain_key, conf.neighbors.embeddings_key = f"{ds}_knn", f"{ds}_embeddings"
    lq = conf.label_quality
    lq.predictions_key, lq.neighbors_key = f"{ds}_predictions", f"{ds}_knn"
    lq.hardness_key, lq.brain_key = f"{ds}_hardness", f"{ds}_mistakenness"
    conf.linear_probe.brain_key, conf.linear_probe.embeddings_key = lq.predictions_key, f"{ds}_embeddings"
    ingest_job.run(conf)

    embed.run(conf)
    neighbors.run(conf)
    linear_probe.run(conf)
    hardness.run(conf)
    mistake_run = label_quality.run_mistakenness(conf)

    from sklearn.metrics import roc_auc_score

    samples = lake.read("samples", columns=["sample_id", "attributes"], filter=pc.field("dataset") == ds)
    flipped = [json.loads(a)["flipped"] for a in samples["attributes"].to_pylist()]
    scored = lake.read("mistakenness", columns=["sample_id", "mistakenness", "is_issue"],
                       filter=pc.field("run_id") == mistake_run).sort_by("sample_id")
    is_flipped = dict(zip(samples["sample_id"].to_pylist(), flipped))
    truth = np.array([is_flipped[s] for s in scored["sample_id"].to_pylist()])
    score = scored["mistakenness"].to_numpy()
    flagged = scored["is_issue"].to_numpy(zero_copy_only=False)
    with runs.track(lake, brain_key=f"{ds}_walkthrough", method="walkthrough", dataset=ds,
                    inputs={"mistakenness": mistake_run}, config=conf.model_dump(), policy=conf.runs) as run:
        run.metrics.update(
            flipped=float(truth.sum()), auroc=float(roc_auc_score(truth, score)),
            precision_at_k=precision_at_k(score, truth), flagged=float(flagged.sum()),
            flagged_precision=float(truth[flagged].mean()) if flagged.any() else float("nan"),
            flagged_recall=float(flagged[truth].mean()))
    log.info("walkthrough: %s", run.metrics)
    return run.run_id


JOB = Job(name="walkthrough", engine="ray", help="the label-mistake walkthrough on the digits",
          reads=(),
          writes=("samples", "embeddings", "neighbors", "predictions", "hardness", "mistakenness", "label_quality_classes", "label_confusion"),
          run=run)


if __name__ == "__main__":
    JOB.main()
