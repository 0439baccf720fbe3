"""Bring your own predictions: register-predictions → mistakenness on the noisy digits, and hardness
without labels (Delta lake, Spark for the mistakenness aggregates)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from tests.conftest import local_conf

from brain import results, runs
from jobs.cli import main as brain_main
from brain.lake import Lake
from brain.methods import hardness as hardness_method

pytestmark = pytest.mark.integration


def _conf_file(conf, path):
    path.write_text(yaml.safe_dump(conf.model_dump()))
    return str(path)


@pytest.fixture(scope="module")
def noisy_digits(tmp_path_factory):
    """The walkthrough's noisy digits ingested (no embeddings: the user brings a model)."""
    from jobs import digits, ingest
    from jobs.walkthrough import write_noisy_manifest

    root = tmp_path_factory.mktemp("byop")
    conf = local_conf(root / "lake")
    conf.dataset = "digits_noisy"
    digits.write_digits(root / "digits")
    conf.ingest.manifest = str(root / "manifest.parquet")
    write_noisy_manifest(root / "digits", root / "manifest.parquet", fraction=0.2, seed=0)
    ingest.run(conf)
    return conf, root


def test_registered_predictions_give_the_walkthroughs_mistakenness(noisy_digits, spark, tmp_path):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import SVC

    from jobs import label_quality
    from jobs.walkthrough import precision_at_k

    conf, root = noisy_digits
    manifest = pq.read_table(root / "manifest.parquet")
    uris, noisy = manifest["uri"].to_pylist(), manifest["label"].to_pylist()
    # "train your model": the user's own classifier (an RBF SVM with calibrated probabilities) trained on
    # the noisy labels, predicting each image out of fold; its log-probabilities are the logits, by uri
    pixels = np.stack([np.asarray(Image.open(u), np.float32).reshape(-1) / 255 for u in uris])
    model = CalibratedClassifierCV(SVC(C=10), ensemble=False)
    probs = cross_val_predict(model, pixels, noisy, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                              method="predict_proba")
    logits, classes = np.log(np.clip(probs, 1e-12, None)), sorted(set(noisy))
    pq.write_table(pa.table({"uri": uris, "logits": pa.array(list(logits), pa.list_(pa.float32()))}),
                   tmp_path / "preds.parquet")
    (tmp_path / "classes.txt").write_text("\n".join(classes))
    args = ["--conf", _conf_file(conf, tmp_path / "conf.yaml"), "--file", str(tmp_path / "preds.parquet"),
            "--classes-file", str(tmp_path / "classes.txt"), "--brain-key", "my_model"]
    assert brain_main(["register-predictions", *args]) == 0

    lake = Lake(conf.lake)
    loaded = results.load_results(lake, "my_model")
    assert loaded.classes == classes and loaded.rows.num_rows == len(uris)
    assert set(loaded.rows["label"].to_pylist()) <= set(classes)  # argmax of the logits

    conf.label_quality.predictions_key, conf.label_quality.neighbors_key = "my_model", None
    run_id = label_quality.run(conf)
    scored = lake.read("mistakenness", filter=pc.field("run_id") == run_id)
    samples = lake.read("samples", columns=["sample_id", "attributes"], filter=pc.field("dataset") == conf.dataset)
    flipped = {s: json.loads(a)["flipped"] for s, a in zip(samples["sample_id"].to_pylist(),
                                                            samples["attributes"].to_pylist())}
    truth = np.array([flipped[s] for s in scored["sample_id"].to_pylist()])
    score = scored["mistakenness"].to_numpy()
    assert scored.num_rows == 1797 and truth.sum() == round(0.2 * 1797)
    # the walkthrough's figures (tests/integration/test_label_quality.py) with the user's model
    assert roc_auc_score(truth, score) >= 0.99 and precision_at_k(score, truth) >= 0.9


def test_register_predictions_refuses_bad_rows_naming_the_sample(noisy_digits, tmp_path, capsys):
    conf, root = noisy_digits
    uris = pq.read_table(root / "manifest.parquet")["uri"].to_pylist()[:3]
    conf_file = _conf_file(conf, tmp_path / "conf.yaml")
    cases = {
        "nan": (pa.table({"uri": uris, "logits": [[0.0, 1.0], [np.nan, 0.0], [1.0, 0.0]]}), "a,b",
                "NaN or infinite"),
        "width": (pa.table({"uri": uris, "logits": [[0.0, 1.0, 2.0]] * 3}), "a,b", "3 logits, but 2 class names"),
        "label": (pa.table({"uri": uris, "label": ["a", "zebra", "b"]}), "a,b", "label 'zebra' is not one of"),
        "uri": (pa.table({"uri": uris[:2] + ["/nowhere.png"], "label": ["a"] * 3}), "a,b",
                "uri /nowhere.png: not a sample"),
        "box": (pa.table({"uri": uris, "detections": [[{"label": "a", "bbox": [0.5, 0.5, 0.7, 0.1],
                                                        "confidence": 0.9}], [], []]}), None, "bbox"),
    }
    for name, (table, classes, message) in cases.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
        extra = ["--classes", classes] if classes else []
        assert brain_main(["register-predictions", "--conf", conf_file, "--file", str(tmp_path / f"{name}.parquet"),
                           "--brain-key", f"bad_{name}", *extra]) == 2
        assert message in capsys.readouterr().err, name
        with pytest.raises(runs.RunNotFoundError):
            runs.get_run(Lake(conf.lake), f"bad_{name}")


def test_hardness_needs_no_labels_and_no_matching_classes(noisy_digits, tmp_path, capsys):
    from jobs import ingest

    conf, root = noisy_digits
    # a dataset without labels; a model whose classes are not the digits
    uris = pq.read_table(root / "manifest.parquet")["uri"].to_pylist()[:40]
    pq.write_table(pa.table({"uri": uris}), tmp_path / "unlabelled.parquet")
    unlabelled = conf.model_copy(deep=True)
    unlabelled.dataset, unlabelled.ingest.manifest = "unlabelled", str(tmp_path / "unlabelled.parquet")
    ingest.run(unlabelled)
    lake = Lake(conf.lake)
    ids = lake.read("samples", columns=["sample_id", "label"], filter=pc.field("dataset") == "unlabelled")
    assert ids["label"].null_count == 40
    logits = np.random.default_rng(0).normal(0, 2, size=(40, 3)).astype(np.float32)
    np.save(tmp_path / "logits.npy", logits)
    (tmp_path / "ids.txt").write_text("\n".join(ids["sample_id"].to_pylist()))
    conf_file = _conf_file(unlabelled, tmp_path / "conf.yaml")
    assert brain_main(["register-predictions", "--conf", conf_file, "--file", str(tmp_path / "logits.npy"),
                       "--ids", str(tmp_path / "ids.txt"), "--classes", "cat,dog,boat", "--brain-key", "other"]) == 0
    assert brain_main(["hardness", "--conf", conf_file, "--set", "label_quality.predictions_key=other",
                       "--set", "label_quality.hardness_key=other_hardness"]) == 0
    rows = results.load_results(lake, "other_hardness")
    got = dict(zip(rows["sample_id"].to_pylist(), rows["hardness"].to_pylist()))
    expected = hardness_method.hardness(logits)
    np.testing.assert_allclose([got[s] for s in ids["sample_id"].to_pylist()], expected, rtol=1e-6)
    # mistakenness still needs labels, and says so
    assert brain_main(["label-quality", "--conf", conf_file, "--set", "label_quality.predictions_key=other",
                       "--set", "label_quality.neighbors_key=null"]) == 2
    assert "no labelled samples to check" in capsys.readouterr().err


def test_labels_alone_are_registered_with_unknown_confidence(noisy_digits, tmp_path):
    conf, root = noisy_digits
    uris = pq.read_table(root / "manifest.parquet")["uri"].to_pylist()[:3]
    rows = pa.table({"uri": uris, "label": ["1", "7", None]})
    pacsv.write_csv(rows, tmp_path / "labels.csv")
    assert brain_main(["register-predictions", "--conf", _conf_file(conf, tmp_path / "conf.yaml"), "--file",
                       str(tmp_path / "labels.csv"), "--brain-key", "labels_only"]) == 0
    loaded = results.load_results(Lake(conf.lake), "labels_only")
    assert loaded.classes is None
    assert sorted(loaded.rows["label"].to_pylist(), key=str) == sorted(["1", "7", None], key=str)
    assert loaded.rows["confidence"].null_count == 3 and loaded.rows["logits"].null_count == 3


def test_detections_are_registered_as_relative_boxes(noisy_digits, tmp_path):
    conf, root = noisy_digits
    uris = pq.read_table(root / "manifest.parquet")["uri"].to_pylist()[:2]
    detections = [[{"label": "seven", "bbox": [0.1, 0.2, 0.5, 0.5], "confidence": 0.4},
                   {"label": "one", "bbox": [0.0, 0.0, 1.0, 1.0], "confidence": 0.9}], []]
    (tmp_path / "boxes.csv").write_text("uri,detections\n" + "\n".join(
        f'{u},"{json.dumps(d).replace(chr(34), chr(34) * 2)}"' for u, d in zip(uris, detections)) + "\n")
    assert brain_main(["register-predictions", "--conf", _conf_file(conf, tmp_path / "conf.yaml"), "--file",
                       str(tmp_path / "boxes.csv"), "--brain-key", "boxes"]) == 0
    lake = Lake(conf.lake)
    ids = dict(zip(*[lake.read("samples", columns=["uri", "sample_id"])[c].to_pylist() for c in ("uri", "sample_id")]))
    rows = {r["sample_id"]: r for r in results.load_results(lake, "boxes").rows.to_pylist()}
    first, second = rows[ids[uris[0]]], rows[ids[uris[1]]]
    assert first["label"] == "one" and first["confidence"] == pytest.approx(0.9)  # the most confident box
    assert [d["label"] for d in first["detections"]] == ["seven", "one"]
    assert first["detections"][0]["bbox"] == pytest.approx([0.1, 0.2, 0.5, 0.5])
    assert second["label"] is None and second["detections"] == []
