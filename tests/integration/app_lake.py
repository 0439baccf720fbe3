"""A small demo-like lake for the lake browser's tests, made by the real jobs (Ray, Spark, FAISS, Delta).

Dataset ``pets``: 3 classes of textured PNGs in train/ and test/, with edited copies of
some train images (brightened, shifted by a pixel) placed in test/ (near duplicates
that leak across splits) and a few relabelled copies (label mistakes). Jobs: ingest,
embeddings, kNN, uniqueness, near duplicates, leaks, out-of-fold predictions, label
quality, a PCA map. Dataset ``boxes``: a manifest of images with ground-truth boxes
and a detector's boxes (written as a predictions run: the box geometry is what the
view draws), scored by the detection-mistakenness job. One image file is deleted at
the end: its thumbnail must be a placeholder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tests.conftest import local_conf, write_image_folder

from brain import runs, sql
from brain.lake import Lake
from brain.schemas import PREDICTIONS

BOX = [0.1, 0.1, 0.4, 0.4]


@dataclass
class AppLake:
    lake: Lake
    missing_sample: str  # its image file was deleted after the jobs ran
    detection_samples: dict[str, str]  # name → sample id in dataset "boxes"


def _near_copies(train: Path, test: Path, count: int) -> None:
    for i, src in enumerate(sorted(train.rglob("*.png"))[:count]):
        pixels = np.asarray(Image.open(src)).astype(np.int16)
        edited = np.clip(np.roll(pixels, 1, axis=1) + 6, 0, 255).astype(np.uint8)
        out = test / src.parent.name / f"near-{i}-{src.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(edited).save(out)


def build(root: Path) -> AppLake:
    from jobs import (detection_mistakenness, duplicates, embed, ingest, label_quality, leaks, linear_probe,
                      neighbors, uniqueness, visualization)

    images = root / "images"
    write_image_folder(images / "train", per_class=12, size=32, seed=1)
    write_image_folder(images / "test", per_class=4, size=32, seed=2)
    _near_copies(images / "train", images / "test", 4)
    # Label mistakes: copies of cat images filed under dog.
    for i, src in enumerate(sorted((images / "train" / "cat").glob("*.png"))[:3]):
        Image.open(src).save(images / "train" / "dog" / f"mislabelled-{i}.png")
    lake = Lake(root / "lake")
    conf = local_conf(lake.uri)
    conf.ingest.source = str(images)
    conf.embed.shard_size = 16
    conf.visualization.method = "pca"
    conf.duplicates.candidate_thresh = 0.3
    ingest.run(conf)
    embed.run(conf)
    neighbors.run(conf)
    uniqueness.run(conf)
    duplicates.run(conf)
    leaks.run(conf)
    conf.linear_probe.folds = 3
    linear_probe.run(conf)
    label_quality.run(conf)
    visualization.run(conf)

    boxes = root / "boxes"
    names = ("agree", "wrong_class", "missing", "spurious")
    truth = {"agree": [dict(label="cat", bbox=BOX)], "wrong_class": [dict(label="cat", bbox=BOX)],
             "missing": [], "spurious": [dict(label="dog", bbox=[0.5, 0.5, 0.4, 0.3])]}
    predicted = {"agree": [dict(label="cat", bbox=[0.12, 0.1, 0.4, 0.38], confidence=0.9)],
                 "wrong_class": [dict(label="dog", bbox=BOX, confidence=0.99)],
                 "missing": [dict(label="cat", bbox=[0.3, 0.2, 0.5, 0.6], confidence=0.99)], "spurious": []}
    files = write_image_folder(boxes, per_class=4, classes=("scene",), size=96, seed=3)
    pq.write_table(pa.table({"uri": [str(f) for f in files], "detections": [json.dumps(truth[n]) for n in names]}),
                   boxes / "manifest.parquet")
    det_conf = local_conf(lake.uri)
    det_conf.dataset = "boxes"
    det_conf.ingest.manifest = str(boxes / "manifest.parquet")
    ingest.run(det_conf)
    uri_to_id = {r["uri"]: r["sample_id"]
                 for r in sql.query(lake, "SELECT uri, sample_id FROM samples WHERE dataset = 'boxes'").to_pylist()}
    ids = {n: uri_to_id[str(f)] for n, f in zip(names, files)}
    with runs.track(lake, brain_key="detector", method="predictions", dataset="boxes", config={}) as run:
        run.write("predictions", pa.table({
            "run_id": [run.run_id] * len(names), "sample_id": [ids[n] for n in names],
            "label": [None] * len(names), "confidence": pa.nulls(len(names), pa.float32()),
            "logits": pa.nulls(len(names), pa.list_(pa.float32())),
            "detections": pa.array([predicted[n] for n in names], PREDICTIONS.field("detections").type)}))
    det_conf.label_quality.predictions_key = "detector"
    detection_mistakenness.run(det_conf)

    missing = sql.query(lake, "SELECT sample_id, uri FROM samples WHERE dataset = 'pets' AND split = 'test' "
                              "ORDER BY sample_id LIMIT 1").to_pylist()[0]
    Path(missing["uri"]).unlink()
    return AppLake(lake, missing["sample_id"], ids)
