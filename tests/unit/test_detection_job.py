"""The detection-mistakenness job on a real Delta lake (it runs on the driver: no engine)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import local_conf

from brain import runs, sql
from brain.schemas import PREDICTIONS

BOX = [0.1, 0.1, 0.4, 0.4]


def _lake_with(lake, image_folder, truth: dict[str, list], predicted: dict[str, list]):
    from jobs import ingest

    files = sorted(image_folder.rglob("*.png"))[: len(truth)]
    manifest = image_folder / "manifest.parquet"
    pq.write_table(pa.table({"uri": [str(f) for f in files], "detections": [json.dumps(v) for v in truth.values()]}),
                   manifest)
    conf = local_conf(lake.uri)
    conf.ingest.manifest = str(manifest)
    ingest.run(conf)
    ids = {name: sid for name, sid in zip(truth, sql.query(lake, "SELECT sample_id, uri FROM samples ORDER BY uri")
                                          ["sample_id"].to_pylist())}
    with runs.track(lake, brain_key="detector", method="predictions", dataset="pets", config={}) as run:
        run.write("predictions", pa.table({
            "run_id": [run.run_id] * len(predicted), "sample_id": [ids[n] for n in predicted],
            "label": [None] * len(predicted), "confidence": pa.nulls(len(predicted), pa.float32()),
            "logits": pa.nulls(len(predicted), pa.list_(pa.float32())),
            "detections": pa.array(list(predicted.values()), PREDICTIONS.field("detections").type)}))
    conf.label_quality.predictions_key = "detector"
    return conf, ids


def test_scores_missing_spurious_and_copy_missing(lake, image_folder):
    from jobs import detection_mistakenness

    truth = {"agree": [dict(label="cat", bbox=BOX)], "wrong_class": [dict(label="cat", bbox=BOX)],
             "missing": [], "spurious": [dict(label="dog", bbox=BOX)]}
    predicted = {"agree": [dict(label="cat", bbox=BOX, confidence=0.9)],
                 "wrong_class": [dict(label="dog", bbox=BOX, confidence=0.99)],
                 "missing": [dict(label="cat", bbox=BOX, confidence=0.99)], "spurious": []}
    conf, ids = _lake_with(lake, image_folder, truth, predicted)
    conf.label_quality.copy_missing = True
    detection_mistakenness.run(conf)
    rows = {r["sample_id"]: r for r in lake.read("detection_mistakenness").to_pylist()}
    assert rows[ids["agree"]]["mistakenness"] == pytest.approx((-0.9 + 1) / 2)
    assert rows[ids["wrong_class"]]["mistakenness"] == pytest.approx((0.99 + 1) / 2)
    assert rows[ids["agree"]]["mistakenness_loc"] == pytest.approx((-0.9 + 1) / 2, abs=1e-6)  # a perfect box: u = 0 (float32 boxes)
    assert (rows[ids["missing"]]["num_missing"], rows[ids["spurious"]]["num_spurious"]) == (1, 1)
    assert rows[ids["missing"]]["mistakenness"] == -1
    objects = lake.read("detection_objects").to_pylist()
    assert {(o["source"], o["possible_missing"], o["possible_spurious"]) for o in objects
            if o["sample_id"] in (ids["missing"], ids["spurious"])} == {("prediction", True, None),
                                                                        ("ground_truth", None, True)}
    labels = {r["sample_id"]: r["detections"] for r in lake.read("detection_labels").to_pylist()}
    assert [d["label"] for d in labels[ids["missing"]]] == ["cat"] and labels[ids["spurious"]][0]["label"] == "dog"


def test_a_box_without_bbox_names_the_sample_and_writes_nothing(lake, image_folder):
    from jobs import detection_mistakenness

    conf, ids = _lake_with(lake, image_folder, {"broken": [dict(label="cat")]},
                           {"broken": [dict(label="cat", bbox=BOX, confidence=0.5)]})
    with pytest.raises(ValueError, match=f"sample {ids['broken']}: attributes.detections\\[0\\] has no \\['bbox'\\]"):
        detection_mistakenness.run(conf)
    assert lake.read("detection_mistakenness").num_rows == 0 and lake.read("detection_objects").num_rows == 0
