"""Patches everywhere: kNN, uniqueness, duplicates, leaks, maps and similarity over a patch embeddings run.

One small lake of detections (two ground-truth boxes per image); one image's second box is a pixel copy of
another image's first box, in a different split, so its patch is a duplicate (and a leak) of that box.
Real local Ray, Spark and Delta tables; one patch embeddings run feeds every job.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.conftest import local_conf

from brain import results, runs, sql
from brain.config import IngestConf
from brain.lake import Lake
from jobs.cli import main as brain_main

pytestmark = pytest.mark.integration

BOXES = [{"label": "top-left", "bbox": [0.0, 0.0, 0.5, 0.5]}, {"label": "bottom-right", "bbox": [0.5, 0.5, 0.5, 0.5]}]
IMAGES, SIZE, ORIGINAL, COPY = 10, 32, 2, 7  # image COPY's box 1 holds the pixels of image ORIGINAL's box 0


@pytest.fixture(scope="module")
def patch_lake(tmp_path_factory, ray_session, spark):
    """Ingested images with boxes, their patch embeddings, and a patch kNN run (k=3)."""
    from jobs import ingest, neighbors, patch_embeddings

    root = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(7)
    pictures = [np.clip(rng.normal(60 + 15 * i, 50, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8) for i in range(IMAGES)]
    half = SIZE // 2
    pictures[COPY][half:, half:] = pictures[ORIGINAL][:half, :half]
    uris = []
    for i, picture in enumerate(pictures):
        uris.append(str(root / f"img-{i:02d}.png"))
        Image.fromarray(picture).save(uris[-1])
    splits = ["test" if i == COPY else "train" for i in range(IMAGES)]
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table({"uri": uris, "label": ["scene"] * IMAGES, "split": splits,
                             "boxes": [json.dumps(BOXES)] * IMAGES}), manifest)
    conf = local_conf(root / "lake", ingest=IngestConf(manifest=str(manifest)))
    conf.patches.source, conf.patches.brain_key = "attributes.boxes", "patches"
    conf.neighbors.embeddings_key, conf.neighbors.brain_key, conf.neighbors.k = "patches", "patch_knn", 3
    conf.uniqueness.neighbors_key, conf.uniqueness.brain_key = "patch_knn", "patch_uniqueness"
    conf.duplicates.neighbors_key, conf.duplicates.brain_key, conf.duplicates.thresh = "patch_knn", "patch_dups", 1e-4
    conf.leaks.duplicates_key, conf.leaks.brain_key = "patch_dups", "patch_leaks"
    conf.visualization.embeddings_key, conf.visualization.brain_key = "patches", "patch_map"
    conf.visualization.method = "pca"
    ingest.run(conf)
    patch_embeddings.run(conf)
    neighbors.run(conf)
    lake = Lake(conf.lake)
    ids = dict(zip(*(lake.read("samples")[c].to_pylist() for c in ("uri", "sample_id"))))
    return conf, lake, [ids[u] for u in uris]


def boxes_of(sample_ids: list[str]) -> set[tuple[str, int, str, tuple[float, ...]]]:
    return {(s, i, box["label"], tuple(box["bbox"])) for s in sample_ids for i, box in enumerate(BOXES)}


def keyed(table: pa.Table) -> set[tuple[str, int, str, tuple[float, ...]]]:
    return {(r["sample_id"], r["patch_index"], r["patch_label"], tuple(r["patch_bbox"])) for r in table.to_pylist()}


def test_patch_knn_rows_are_keyed_by_box_and_the_copied_box_is_nearest(patch_lake):
    conf, lake, ids = patch_lake
    shards = results.load_results(lake, "patch_knn")  # a kNN run loads as its FAISS shards: one vector per box
    assert sum(shard.ntotal for shard in shards) == IMAGES * len(BOXES)
    rows = sql.query(lake, "SELECT sample_id, patch_index, neighbor_ids, distances FROM neighbors")
    assert rows.num_rows == IMAGES * len(BOXES)
    assert {(r["sample_id"], r["patch_index"]) for r in rows.to_pylist()} == {
        (s, i) for s in ids for i in range(len(BOXES))}
    by_box = {(r["sample_id"], r["patch_index"]): r for r in rows.to_pylist()}
    original = by_box[(ids[ORIGINAL], 0)]
    assert original["neighbor_ids"][0] == f"{ids[COPY]}#1"
    assert original["distances"][0] == pytest.approx(0.0, abs=1e-5)
    assert all("#" in n for r in rows.to_pylist() for n in r["neighbor_ids"])


def test_patch_uniqueness_on_spark_carries_box_and_label_and_matches_the_in_process_scores(patch_lake):
    from jobs import uniqueness

    conf, lake, ids = patch_lake
    uniqueness.run(conf)
    scores = sql.query(lake, "SELECT * FROM uniqueness WHERE brain_key = 'patch_uniqueness'")
    assert keyed(scores) == boxes_of(ids)
    assert pc.max(scores["uniqueness"]).as_py() == pytest.approx(1.0)
    expected = uniqueness.score_in_process(lake, conf, runs.latest_succeeded(lake, "patch_knn")["run_id"], "check",
                                           runs.latest_succeeded(lake, "patches")["run_id"])
    on_spark = {(r["sample_id"], r["patch_index"]): r["uniqueness"] for r in scores.to_pylist()}
    for row in expected.to_pylist():
        assert on_spark[(row["sample_id"], row["patch_index"])] == pytest.approx(row["uniqueness"])
    twins = sorted(on_spark, key=on_spark.get)[:2]
    assert set(twins) == {(ids[ORIGINAL], 0), (ids[COPY], 1)}  # the least unique boxes: the copied pair


def test_duplicate_boxes_in_different_images_are_found_and_leak_across_splits(patch_lake):
    from jobs import duplicates, leaks

    conf, lake, ids = patch_lake
    duplicates.run(conf)
    dups = sql.query(lake, "SELECT * FROM duplicates WHERE brain_key = 'patch_dups'").to_pylist()
    kept, copy = sorted([(ids[ORIGINAL], 0), (ids[COPY], 1)])
    assert len(dups) == 1
    row = dups[0]
    assert (row["kept_sample_id"], row["kept_patch_index"]) == kept
    assert (row["sample_id"], row["patch_index"]) == copy
    assert row["group_id"] == f"{kept[0]}#{kept[1]}"
    assert row["patch_label"] == BOXES[copy[1]]["label"] and row["patch_bbox"] == pytest.approx(BOXES[copy[1]]["bbox"])
    assert row["distance"] == pytest.approx(0.0, abs=1e-5)
    in_process = conf.model_copy(deep=True)
    in_process.duplicates.brain_key = "patch_dups_driver"
    duplicates.run(in_process, in_process=True)  # the same boxes without Spark
    driver = sql.query(lake, "SELECT * FROM duplicates WHERE brain_key = 'patch_dups_driver'").to_pylist()
    assert [{k: v for k, v in r.items() if k not in ("run_id", "brain_key")} for r in driver] == [
        {k: v for k, v in row.items() if k not in ("run_id", "brain_key")}]

    leaks.run(conf)
    found = sql.query(lake, "SELECT * FROM leaks WHERE brain_key = 'patch_leaks'").to_pylist()
    assert [(r["sample_id"], r["patch_index"], r["kept_patch_index"], r["split"], r["kept_split"]) for r in found] == [
        (copy[0], copy[1], kept[1], "test" if copy[0] == ids[COPY] else "train",
         "train" if copy[0] == ids[COPY] else "test")]

    conf = conf.model_copy(deep=True)
    conf.duplicates.thresh = None  # the default verifies on pixels: whole images only
    with pytest.raises(ValueError, match="duplicates over patches compare their embeddings"):
        duplicates.run(conf)


def test_patch_map_has_one_point_per_box_and_plots(patch_lake, tmp_path):
    from jobs import visualization

    conf, lake, ids = patch_lake
    visualization.run(conf)
    points = sql.query(lake, "SELECT * FROM visualization WHERE brain_key = 'patch_map'")
    assert keyed(points) == boxes_of(ids)
    assert np.isfinite(points["x"].to_numpy()).all() and points["z"].null_count == points.num_rows
    by_box = {(r["sample_id"], r["patch_index"]): (r["x"], r["y"]) for r in points.to_pylist()}
    assert by_box[(ids[ORIGINAL], 0)] == pytest.approx(by_box[(ids[COPY], 1)], abs=1e-6)

    assert brain_main(["plot", "patch_map", "--lake", conf.lake, "--out", str(tmp_path / "map.html"), "--no-png",
                       "--color-by", "patch_label"]) == 0
    page = (tmp_path / "map.html").read_text()
    assert f"{ids[COPY]}#1" in page and "bottom-right" in page


def test_brain_similar_by_patch_id_returns_boxes_with_their_samples(patch_lake, tmp_path):
    conf, lake, ids = patch_lake
    out = tmp_path / "similar.json"
    assert brain_main(["similar", "--key", "patch_knn", "--id", f"{ids[ORIGINAL]}#0", "-k", "3", "--lake", conf.lake,
                       "--format", "json", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and f"{ids[ORIGINAL]}#0" not in [r["patch_id"] for r in rows]
    first = rows[0]
    assert (first["patch_id"], first["sample_id"], first["patch_index"]) == (f"{ids[COPY]}#1", ids[COPY], 1)
    assert first["patch_label"] == "bottom-right" and first["split"] == "test" and first["uri"].endswith("img-07.png")
    assert first["distance"] == pytest.approx(0.0, abs=1e-5)

    import brain
    from brain.similarity import similar

    by_api = brain.open_lake(conf=conf).sort_by_similarity(f"{ids[ORIGINAL]}#0", brain_key="patch_knn", k=1)
    assert by_api["patch_id"].to_pylist() == [f"{ids[COPY]}#1"]  # a patch id is a query, not a text prompt

    far = similar(lake, "patch_knn", sample_id=f"{ids[ORIGINAL]}#0", k=2, reverse=True, where="split = 'test'",
                  save_as="patch_view")
    assert far["sample_id"].to_pylist() == [ids[COPY]] * 2  # the test split holds one image: its two boxes
    assert far["distance"].to_pylist()[0] >= far["distance"].to_pylist()[1]
    view = sql.query(lake, "SELECT sample_id, patch_index FROM similarity_views WHERE brain_key = 'patch_view' "
                           "ORDER BY rank")
    assert view["patch_index"].to_pylist() == far["patch_index"].to_pylist()
    with pytest.raises(ValueError, match="query by patch id"):
        similar(lake, "patch_knn", sample_id=ids[ORIGINAL])


def test_whole_image_runs_leave_the_patch_columns_null(small_pipeline):
    """The session's whole-image pipeline (shared with test_pipeline: no job of its own here)."""
    lake = small_pipeline.lake
    scores = sql.query(lake, "SELECT * FROM uniqueness")
    assert scores.num_rows > 0
    for column in ("patch_index", "patch_label", "patch_bbox"):
        assert scores[column].null_count == scores.num_rows
    knn = sql.query(lake, "SELECT * FROM neighbors")
    assert knn["patch_index"].null_count == knn.num_rows
    assert not any("#" in n for row in knn["neighbor_ids"].to_pylist() for n in row)
    from brain.similarity import similar

    found = similar(lake, "knn", sample_id=knn["sample_id"][0].as_py(), k=2)
    assert found.column_names == ["sample_id", "uri", "label", "split", "distance"] and found.num_rows == 2


def test_the_lake_browser_shows_one_row_per_sample_scored_by_its_most_unique_box(patch_lake):
    from brain.app import queries
    from jobs import duplicates, uniqueness

    conf, lake, ids = patch_lake
    if not runs.list_runs(lake, method="uniqueness").num_rows:  # the tests above may run alone (-k)
        uniqueness.run(conf, in_process=True)
    if not runs.list_runs(lake, method="duplicates_near").num_rows:
        duplicates.run(conf)
    page = queries.samples(lake, per_page=50)
    assert "uniqueness" in page["scores"] and not any("patch" in name for name in page["scores"])
    assert sorted(item["sample_id"] for item in page["items"]) == sorted(ids)
    boxes = sql.query(lake, "SELECT sample_id, max(uniqueness) AS best FROM uniqueness GROUP BY sample_id")
    best = dict(zip(boxes["sample_id"].to_pylist(), boxes["best"].to_pylist()))
    assert all(item["uniqueness"] == pytest.approx(best[item["sample_id"]]) for item in page["items"])
    assert queries.sample(lake, ids[COPY])["neighbors"] == []  # only a patch kNN run: no sample neighbours
    group = queries.duplicate_groups(lake, key="patch_dups")["groups"][0]
    assert {group["kept"]["patch_index"], group["members"][0]["patch_index"]} == {0, 1}
