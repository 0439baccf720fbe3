"""apply-model, patch embeddings, resume and registered embeddings on the real local Ray and Delta lake."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.conftest import local_conf, write_image_folder

from brain import images as brain_images
from brain import runs
from jobs.cli import main as brain_main
from brain.config import IngestConf
from brain.lake import Lake
from brain.models import load_model, wrap
from brain.patches import crop

pytestmark = pytest.mark.integration

BOXES = [{"label": "left", "bbox": [0.0, 0.0, 0.5, 1.0]}, {"label": "corner", "bbox": [0.5, 0.5, 0.5, 0.5]}]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, ray_session):
    from jobs import ingest

    root = tmp_path_factory.mktemp("models")
    paths = write_image_folder(root / "images", per_class=6)
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table({"uri": [str(p) for p in paths], "label": [p.parent.name for p in paths],
                             "boxes": [json.dumps(BOXES)] * len(paths)}), manifest)
    conf = local_conf(root / "lake", ingest=IngestConf(manifest=str(manifest)))
    ingest.run(conf)
    corrupt = paths[4]
    corrupt.write_bytes(corrupt.read_bytes()[:50])  # broken after ingest: found when decoding
    return root, conf, paths, corrupt


def tiny_classifier():
    torch = pytest.importorskip("torch", reason="torch is the optional extra lakebrain[torch]")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_predictions_with_logits_round_trip_and_a_corrupt_image_is_recorded(dataset):
    torch = pytest.importorskip("torch")
    from jobs import apply_model

    root, conf, paths, corrupt = dataset
    net = tiny_classifier()
    model_path = root / "classifier.pt"
    torch.jit.save(torch.jit.script(net), str(model_path))
    conf = conf.model_copy(deep=True)
    conf.apply_model.model, conf.apply_model.classes = str(model_path), ["cat", "dog", "fish"]
    conf.apply_model.shard_size, conf.models.input_size = 5, 16
    run_id = apply_model.run(conf)

    lake = Lake(conf.lake)
    preds = lake.read("predictions", filter=pc.field("run_id") == run_id)
    samples = lake.read("samples", columns=["sample_id", "uri"])
    uri_of = dict(zip(samples["sample_id"].to_pylist(), samples["uri"].to_pylist()))
    assert preds.num_rows == len(paths) - 1  # every image but the corrupt one, from the same shard too
    assert str(corrupt) not in {uri_of[s] for s in preds["sample_id"].to_pylist()}
    errors = lake.read("ingest_errors", filter=pc.field("run_id") == run_id)
    assert errors["uri"].to_pylist() == [str(corrupt)] and errors["stage"].to_pylist() == ["decode"]
    assert "sample " in errors["reason"][0].as_py()

    stored = np.array(preds["logits"].to_pylist(), np.float32)
    with wrap(net, classes=["cat", "dog", "fish"], input_size=16) as model:
        expected = model.predict_all([brain_images.load(uri_of[s]) for s in preds["sample_id"].to_pylist()])
    np.testing.assert_allclose(stored, expected.logits, rtol=1e-4, atol=1e-5)
    assert preds["label"].to_pylist() == expected.labels
    np.testing.assert_allclose(preds["confidence"].to_numpy(), expected.confidence, rtol=1e-5)
    assert json.loads(lake.read_artifact(run_id, "classes.json")) == ["cat", "dog", "fish"]
    assert runs.get_run(lake, "predictions")["status"] == "succeeded"


def test_patch_embeddings_from_ground_truth_boxes(dataset):
    from jobs import patch_embeddings

    _, conf, paths, corrupt = dataset
    conf = conf.model_copy(deep=True)
    conf.patches.source, conf.patches.shard_size = "attributes.boxes", 7
    run_id = patch_embeddings.run(conf)
    lake = Lake(conf.lake)
    rows = lake.read("patch_embeddings", filter=pc.field("run_id") == run_id).sort_by([("sample_id", "ascending"),
                                                                                     ("patch_index", "ascending")])
    assert rows.num_rows == 2 * (len(paths) - 1)
    uri_of = dict(zip(*(lake.read("samples")[c].to_pylist() for c in ("sample_id", "uri"))))
    with load_model() as model:
        for row in rows.slice(0, 4).to_pylist():
            box = BOXES[row["patch_index"]]
            assert row["label"] == box["label"] and row["bbox"] == pytest.approx(box["bbox"])
            expected = model.embed_all([crop(brain_images.load(uri_of[row["sample_id"]]), box["bbox"])])[0]
            np.testing.assert_allclose(row["vector"], expected, atol=1e-6)


def test_a_failed_run_resumes_without_recomputing_staged_shards(dataset):
    from jobs.model_pipeline import PipelineSpec, run_pipeline

    _, conf, paths, corrupt = dataset
    lake = Lake(conf.lake)
    items = lake.read("samples", columns=["sample_id", "uri"])

    def spec(finish=None):
        return PipelineSpec(table="embeddings", brain_key="resumable", method="embeddings", items=items,
                            model_name=None, model_kwargs={}, shard_size=4, resume=True,
                            settings=dict(shard_size=4), finish=finish)

    def fail(lake, run):
        raise RuntimeError("the job died after staging its shards")

    with pytest.raises(RuntimeError, match="died"):
        run_pipeline(conf, spec(fail))
    failed = runs.get_run(lake, "resumable")
    assert failed["status"] == "failed"
    staged = {f: (lake.staging_dir("embeddings", failed["run_id"]) + "/" + f.rsplit("/", 1)[-1])
              for f in lake.staged_files("embeddings", failed["run_id"])}
    mtimes = {f: os.stat(path).st_mtime_ns for f, path in staged.items()}
    assert len(staged) == 5  # 18 samples in shards of 4
    assert lake.read("embeddings", filter=pc.field("run_id") == failed["run_id"]).num_rows == 0

    run_id = run_pipeline(conf, spec())
    assert run_id == failed["run_id"]
    info = runs.get_run(lake, "resumable")
    assert info["status"] == "succeeded" and dict(info["metrics"])["shards_reused"] == 5
    assert {f: os.stat(p).st_mtime_ns for f, p in staged.items()} == mtimes  # not recomputed
    assert lake.read("embeddings", filter=pc.field("run_id") == run_id).num_rows == len(paths) - 1

    # a failed run over other samples is not resumed: its shards would not be this dataset's
    with pytest.raises(RuntimeError, match="died"):
        run_pipeline(conf, spec(fail))
    failed_again = runs.get_run(lake, "resumable")["run_id"]
    items = items.slice(0, 10)
    fresh = run_pipeline(conf, spec())
    assert fresh != failed_again
    expected = sum(uri != str(corrupt) for uri in items["uri"].to_pylist())
    assert lake.read("embeddings", filter=pc.field("run_id") == fresh).num_rows == expected


def test_register_embeddings_from_a_file(dataset, tmp_path, capsys):
    _, conf, paths, _ = dataset
    lake = Lake(conf.lake)
    ids = sorted(lake.read("samples")["sample_id"].to_pylist())
    vectors = np.random.default_rng(0).normal(size=(len(ids), 5)).astype(np.float32)
    np.savez(tmp_path / "vecs.npz", sample_id=np.array(ids), vector=vectors)
    args = ["--set", f"lake={conf.lake}", "--set", f"dataset={conf.dataset}"]
    assert brain_main(["register-embeddings", "--file", str(tmp_path / "vecs.npz"), "--brain-key", "mine", *args]) == 0
    rows = lake.read("embeddings", filter=pc.field("run_id") == runs.latest_succeeded(lake, "mine")["run_id"])
    got = dict(zip(rows["sample_id"].to_pylist(), rows["vector"].to_pylist()))
    np.testing.assert_allclose([got[i] for i in ids], vectors)

    np.savez(tmp_path / "bad.npz", sample_id=np.array(ids[:2] + ["nope"]), vector=vectors[:3])
    assert brain_main(["register-embeddings", "--file", str(tmp_path / "bad.npz"), "--brain-key", "bad", *args]) == 2
    assert "sample nope: not a sample of dataset" in capsys.readouterr().err


def test_a_linear_probe_stores_out_of_fold_predictions_with_logits(dataset):
    from jobs import embed, linear_probe

    _, conf, paths, _ = dataset
    embed.run(conf)
    conf.linear_probe.folds = 3
    run_id = linear_probe.run(conf)
    lake = Lake(conf.lake)
    preds = lake.read("predictions", filter=pc.field("run_id") == run_id)
    assert preds.num_rows == len(paths) - 1
    logits = np.array(preds["logits"].to_pylist())
    assert logits.shape == (len(paths) - 1, 3)
    classes = json.loads(lake.read_artifact(run_id, "classes.json"))
    assert preds["label"].to_pylist() == [classes[i] for i in logits.argmax(axis=1)]
    accuracy = dict(runs.get_run(lake, run_id)["metrics"])["oof_accuracy"]
    assert accuracy > 0.6  # colour themes per class: a linear model separates them out of fold


def test_a_zoo_detector_runs_in_the_ray_actors_and_stores_relative_boxes(dataset, tmp_path):
    torch = pytest.importorskip("torch")
    detection = pytest.importorskip("torchvision.models.detection")
    from brain.models import ZOO
    from jobs import apply_model

    root, conf, paths, corrupt = dataset
    torch.manual_seed(0)  # random weights the test saves where the zoo looks for the COCO file
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.save(detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(),
               weights / ZOO["faster-rcnn-resnet50-fpn"].weights_file)
    conf = conf.model_copy(deep=True)
    conf.apply_model.model, conf.apply_model.brain_key = "faster-rcnn-resnet50-fpn", "detector"
    conf.apply_model.confidence_thresh, conf.apply_model.shard_size, conf.apply_model.batch_size = 0.011, 4, 2
    conf.models.weights_dir, conf.models.input_size = str(weights), 96
    run_id = apply_model.run(conf)

    lake = Lake(conf.lake)
    preds = lake.read("predictions", filter=pc.field("run_id") == run_id).sort_by("sample_id")
    assert preds.num_rows == len(paths) - 1 and preds["logits"].null_count == preds.num_rows
    samples = lake.read("samples", columns=["sample_id", "uri"])
    uri_of = dict(zip(samples["sample_id"].to_pylist(), samples["uri"].to_pylist()))
    stored = preds["detections"].to_pylist()
    assert any(stored), "a random detector proposes boxes above a near-uniform confidence"
    with load_model("faster-rcnn-resnet50-fpn", weights_dir=str(weights), input_size=96,
                    confidence_thresh=0.011) as model:
        expected = model.predict_all([brain_images.load(uri_of[s]) for s in preds["sample_id"].to_pylist()])
    for dets, want in zip(stored, expected.detections):
        for d in dets:
            x, y, w, h = d["bbox"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and w >= 0 and h >= 0 and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
            assert d["label"] in model.classes and d["confidence"] >= 0.011
        # the same detections as in this process (compared as sorted scores: float noise may swap ties)
        np.testing.assert_allclose(sorted(d["confidence"] for d in dets)[-5:],
                                   sorted(d.confidence for d in want)[-5:], atol=1e-4)
    top = [max(d["confidence"] for d in dets) if dets else 0.0 for dets in stored]
    np.testing.assert_allclose(preds["confidence"].to_numpy(), top, rtol=1e-6)
