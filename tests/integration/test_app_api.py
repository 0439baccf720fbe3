"""Every route of the lake browser on the demo-like lake (real Ray/Spark/FAISS runs, real Delta tables)."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from starlette.testclient import TestClient

from brain.app.server import create_app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(app_lake, tmp_path_factory):
    return TestClient(create_app(app_lake.lake, cache_dir=tmp_path_factory.mktemp("api-thumbs")))


def _ok(client, path, **kwargs):
    response = client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def _pets(client) -> list[dict]:
    return _ok(client, "/api/samples", params={"dataset": "pets", "per_page": 500})["items"]


def test_front_end_and_plotly_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in page.text and "cdn" not in page.text.lower()
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and len(js.content) > 1_000_000
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/app.css").status_code == 200


def test_overview_lists_datasets_and_the_run_catalog(client):
    data = _ok(client, "/api/overview")
    counts = {d["dataset"]: d["samples"] for d in data["datasets"]}
    assert counts == {"pets": 3 * 12 + 3 * 4 + 4 + 3, "boxes": 4}
    by_method = {r["method"]: r for r in data["runs"]}
    for method in ("ingest", "embeddings", "neighbors", "uniqueness", "duplicates_near", "leaks", "predictions",
                   "hardness", "mistakenness", "visualization", "detection_mistakenness"):
        assert by_method[method]["status"] == "succeeded", method
    assert by_method["uniqueness"]["view"] == "/grid?sort=uniqueness"
    assert by_method["duplicates_near"]["view"] == "/duplicates?key=duplicates"
    assert by_method["visualization"]["view"] == "/map?key=visualization"
    assert by_method["detection_mistakenness"]["view"] == "/mistakes?key=detection_mistakenness"
    assert {"uniqueness", "hardness", "mistakenness", "predictions_confidence"} <= {s["name"] for s in data["scores"]}
    run = _ok(client, f"/api/run/{by_method['uniqueness']['run_id']}")
    assert run["brain_key"] == "uniqueness" and isinstance(run["config"], dict)
    assert client.get("/api/run/no-such-run").status_code == 404


def test_grid_sorts_by_a_score_pages_and_filters(client, app_lake):
    first = _ok(client, "/api/samples", params={"sort": "uniqueness", "order": "desc", "per_page": 10})
    values = [item["uniqueness"] for item in first["items"]]
    assert values == sorted(values, reverse=True) and len(values) == 10
    assert first["total"] == 59 and {"label", "split", "uri", "hardness"} <= set(first["items"][0])
    second = _ok(client, "/api/samples", params={"sort": "uniqueness", "per_page": 10, "page": 1})
    assert second["items"][0]["uniqueness"] <= values[-1]
    assert not {i["sample_id"] for i in first["items"]} & {i["sample_id"] for i in second["items"]}
    rising = _ok(client, "/api/samples", params={"sort": "uniqueness", "order": "asc", "per_page": 5})
    assert rising["items"][0]["uniqueness"] == min(i["uniqueness"] for i in _pets(client) if i["uniqueness"] is not None)
    test_dogs = _ok(client, "/api/samples", params={"where": "split = 'test' AND label = 'dog' AND uniqueness >= 0",
                                                    "per_page": 100})
    assert test_dogs["total"] > 0 and all(i["split"] == "test" and i["label"] == "dog" for i in test_dogs["items"])
    picked = [i["sample_id"] for i in first["items"][:3]]
    chosen = client.post("/api/samples", json={"ids": picked, "per_page": 50})
    assert chosen.status_code == 200 and {i["sample_id"] for i in chosen.json()["items"]} == set(picked)


@pytest.mark.parametrize("params, message", [
    ({"where": "label = "}, "is not a SQL condition"),
    ({"where": "1=1) UNION SELECT 1 FROM samples WHERE (1=1"}, "is not a SQL condition"),
    ({"where": "read_text('/etc/passwd') <> ''"}, "not allowed"),
    ({"where": "(SELECT count(*) FROM runs) > 0"}, "SUBQUERY"),
    ({"where": "no_such_column > 1"}, "no_such_column"),
    ({"sort": "no_such_score"}, "no score 'no_such_score'"),
    ({"order": "sideways"}, "order must be"),
    ({"per_page": "100000"}, "per_page"),
])
def test_bad_grid_parameters_answer_400_or_404_with_the_reason(client, params, message):
    response = client.get("/api/samples", params=params)
    assert response.status_code in (400, 404) and message in response.json()["error"]


def test_sample_page_has_scores_predictions_neighbours_and_duplicates(client):
    top = _ok(client, "/api/duplicates")["groups"][0]
    data = _ok(client, f"/api/sample/{top['kept']['sample_id']}")
    assert data["sample"]["sample_id"] == top["kept"]["sample_id"]
    assert {"uniqueness", "hardness", "mistakenness"} <= set(data["scores"])
    assert data["predictions"][0]["brain_key"] == "predictions" and data["predictions"][0]["label"]
    distances = [n["distance"] for n in data["neighbors"]]
    assert len(distances) == 8 and distances == sorted(distances)
    assert {d["sample_id"] for d in data["duplicates"]} >= {m["sample_id"] for m in top["members"]}
    assert client.get("/api/sample/no-such-sample").status_code == 404


def test_duplicates_and_leaks_show_groups_with_the_kept_sample(client):
    dups = _ok(client, "/api/duplicates", params={"key": "duplicates"})
    assert dups["total"] >= 4 and dups["groups"]
    for group in dups["groups"]:
        assert group["kept"]["sample_id"] not in {m["sample_id"] for m in group["members"]}
        assert all(m["distance"] >= 0 for m in group["members"])
    leaks = _ok(client, "/api/leaks")
    assert leaks["total"] >= 1
    for group in leaks["groups"]:
        assert all(m["split"] != group["kept"]["split"] for m in group["members"])
    assert client.get("/api/duplicates", params={"key": "nope"}).status_code == 404


def test_label_mistakes_classification_and_detection(client, app_lake):
    cls = _ok(client, "/api/mistakes", params={"key": "mistakenness", "per_page": 60})
    scores = [m["mistakenness"] for m in cls["items"]]
    assert cls["kind"] == "mistakenness" and scores == sorted(scores, reverse=True)
    assert {"given_label", "predicted_label", "confidence"} <= set(cls["items"][0])
    det = _ok(client, "/api/mistakes", params={"key": "detection_mistakenness"})
    by_id = {m["sample_id"]: m for m in det["items"]}
    ids = app_lake.detection_samples
    missing = by_id[ids["missing"]]["objects"]
    assert any(o["source"] == "prediction" and o["possible_missing"] for o in missing)
    assert any(o["source"] == "ground_truth" and o["possible_spurious"] for o in by_id[ids["spurious"]]["objects"])
    assert all(len(o["bbox"]) == 4 for m in det["items"] for o in m["objects"])


def test_map_points_coloured_by_a_field(client):
    data = _ok(client, "/api/map", params={"color": "uniqueness"})
    points = data["points"]
    assert len(points["sample_id"]) == 55 and len(points["x"]) == len(points["color"]) == 55
    assert all(isinstance(c, float) for c in points["color"])
    assert "label" in data["fields"] and "uniqueness" in data["fields"]
    assert client.get("/api/map", params={"color": "nope"}).status_code == 400


def test_similar_and_text_search(client):
    query = _pets(client)[0]["sample_id"]
    data = _ok(client, f"/api/similar/{query}", params={"k": 5})
    assert len(data["items"]) == 5 and query not in {i["sample_id"] for i in data["items"]}
    response = client.get("/api/search", params={"text": "a cat"})
    assert response.status_code == 400 and "needs a model with a text tower" in response.json()["error"]


def test_thumbnails_and_images_are_pngs_and_a_missing_file_gets_a_placeholder(client, app_lake):
    sample_id = next(i["sample_id"] for i in _pets(client) if i["sample_id"] != app_lake.missing_sample)
    for path, size in ((f"/thumb/{sample_id}", 128), (f"/thumb/{sample_id}?size=64", 64), (f"/image/{sample_id}", 32)):  # the images are 32×32
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.headers["x-image-status"] == "ok"
        assert max(Image.open(io.BytesIO(response.content)).size) == size
    again = client.get(f"/thumb/{sample_id}")
    assert again.content == client.get(f"/thumb/{sample_id}").content
    for path in (f"/thumb/{app_lake.missing_sample}", f"/image/{app_lake.missing_sample}"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.headers["x-image-status"] == "placeholder"
        Image.open(io.BytesIO(response.content)).verify()
    assert client.get("/thumb/no-such-sample").status_code == 404
    assert client.get(f"/thumb/{sample_id}?size=7").status_code == 400


def test_the_app_never_writes_the_lake(client, app_lake):
    from brain.schemas import TABLES

    lake = app_lake.lake

    def versions():
        return {t: lake.version(t) for t in TABLES if lake.exists(t)}

    before = versions()
    some = _pets(client)[0]["sample_id"]
    for path in ("/", "/api/overview", "/api/scores", "/api/samples?sort=uniqueness&where=split%20%3D%20'test'",
                 f"/api/sample/{some}", "/api/duplicates", "/api/leaks", "/api/mistakes", "/api/map?color=label",
                 f"/api/similar/{some}", "/api/search?text=cat", f"/thumb/{some}", f"/image/{some}"):
        assert client.get(path).status_code in (200, 400), path
    assert versions() == before
