"""The label-mistake walkthrough end to end (Ray, FAISS, Spark), and label-quality bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tests.conftest import local_conf

from brain import runs, sql
from brain.lake import Lake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def walked(tmp_path_factory, ray_session, spark):
    from jobs import walkthrough

    conf = local_conf(tmp_path_factory.mktemp("walk") / "lake")
    run_id = walkthrough.run(conf)
    return Lake(conf.lake), conf, run_id


def test_walkthrough_finds_the_flipped_labels(walked):
    lake, _, run_id = walked
    metrics = dict(runs.get_run(lake, run_id)["metrics"])
    assert metrics["flipped"] == round(0.2 * 1797)
    assert metrics["auroc"] >= 0.99 and metrics["precision_at_k"] >= 0.9
    assert metrics["flagged_precision"] >= 0.9


def test_walkthrough_tables(walked):
    lake, _, _ = walked
    hard = lake.read("hardness")
    assert hard.num_rows == 1797
    assert 0 <= pc.min(hard["hardness"]).as_py() and pc.max(hard["hardness"]).as_py() <= math.log(10) + 1e-9
    per_class = sql.query(lake, "SELECT label, samples, issues FROM label_quality_classes ORDER BY label").to_pylist()
    assert [r["label"] for r in per_class] == [str(d) for d in range(10)]
    assert sum(r["samples"] for r in per_class) == 1797
    issues = sql.query(lake, "SELECT count(*) AS n FROM mistakenness WHERE is_issue")["n"][0].as_py()
    assert sum(r["issues"] for r in per_class) == issues > 0
    confusion = sql.query(lake, "SELECT sum(samples) AS n, sum(CASE WHEN given_label <> suggested_label "
                                "THEN samples ELSE 0 END) AS off FROM label_confusion").to_pylist()[0]
    assert confusion == {"n": 1797, "off": issues}
    suggested = sql.query(lake, "SELECT m.suggested_label, s.attributes FROM mistakenness m "
                                "JOIN samples s USING (sample_id) WHERE m.is_issue").to_pylist()
    right = np.mean([json.loads(r["attributes"])["true_label"] == r["suggested_label"] for r in suggested])
    assert right >= 0.9  # the suggested label is mostly the true one


def _predictions_run(lake: Lake, key: str, logits: list, classes: list[str]) -> None:
    ids = lake.read("samples", columns=["sample_id"], filter=pc.field("dataset") == "digits_noisy")["sample_id"]
    ids = ids.to_pylist()[: len(logits)]
    with runs.track(lake, brain_key=key, method="predictions", dataset="digits_noisy", config={}) as run:
        rows = pa.table({"run_id": [run.run_id] * len(ids), "sample_id": ids, "label": [None] * len(ids),
                         "confidence": pa.nulls(len(ids), pa.float32()),
                         "logits": pa.array(logits, pa.list_(pa.float32())),
                         "detections": pa.nulls(len(ids), lake.read("predictions").schema.field("detections").type)})
        run.write("predictions", rows)
        run.write_artifact("classes.json", json.dumps(classes).encode())


@pytest.mark.parametrize("key, logits, classes, match", [
    ("missing_logits", [[0.0] * 10, None], [str(d) for d in range(10)], "field 'logits' is missing for sample"),
    ("narrow_logits", [[0.0] * 3, [0.0] * 3], [str(d) for d in range(10)], "has a row of logits of length 3, expected 10"),
    ("other_classes", [[0.0, 1.0], [1.0, 0.0]], ["cat", "dog"], "label '.' is not one of the predictions' classes"),
])
def test_bad_predictions_are_refused_and_nothing_is_written(walked, key, logits, classes, match):
    from jobs import label_quality

    lake, conf, _ = walked
    _predictions_run(lake, key, logits, classes)
    bad = conf.model_copy(deep=True)
    bad.dataset = "digits_noisy"
    bad.label_quality.predictions_key, bad.label_quality.neighbors_key = key, None
    bad.label_quality.hardness_key, bad.label_quality.brain_key = f"{key}_h", f"{key}_m"
    before = {t: lake.read(t).num_rows for t in ("hardness", "mistakenness", "label_quality_classes")}
    with pytest.raises(ValueError, match=match):
        label_quality.run(bad)
    assert {t: lake.read(t).num_rows for t in before} == before
