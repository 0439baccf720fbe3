import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import add_bad_files

from brain import ingest


def test_folder_layout_gives_labels_and_stable_ids(image_folder):
    files = ingest.discover_folder(image_folder)
    assert len(files) == 36 and {f.label for f in files} == {"cat", "dog", "fish"}
    samples, errors = ingest.probe(files, dataset="pets", run_id="r")
    assert samples.num_rows == 36 and errors.num_rows == 0
    again, _ = ingest.probe(ingest.discover_folder(image_folder), dataset="pets", run_id="r2")
    assert samples["sample_id"].to_pylist() == again["sample_id"].to_pylist()
    assert len(set(samples["sample_id"].to_pylist())) == 36
    assert set(samples["width"].to_pylist()) == {24}


def test_split_folders_are_recognised(tmp_path):
    from tests.conftest import write_image_folder

    write_image_folder(tmp_path / "train", per_class=2)
    write_image_folder(tmp_path / "test", per_class=1)
    files = ingest.discover_folder(tmp_path)
    assert {(f.split, f.label) for f in files if f.split == "test"} == {("test", "cat"), ("test", "dog"), ("test", "fish")}
    assert sum(f.split == "train" for f in files) == 6


def test_bad_files_become_errors_and_the_rest_is_ingested(image_folder):
    bad = add_bad_files(image_folder)
    samples, errors = ingest.probe(ingest.discover_folder(image_folder), dataset="pets", run_id="r")
    assert samples.num_rows == 37  # 36 + the duplicate copy
    reasons = dict(zip(errors["uri"].to_pylist(), errors["reason"].to_pylist()))
    assert set(reasons) == {str(bad["corrupt"]), str(bad["text"])}
    assert all("not a decodable image" in r for r in reasons.values())
    hashes = dict(zip(samples["uri"].to_pylist(), samples["content_hash"].to_pylist()))
    assert hashes[str(bad["duplicate"])] == hashes[str(bad["original"])]


def test_manifest_with_missing_file_and_extra_columns(image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))[:3]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": [str(files[0]), str(files[1]), "missing.png"],
                             "label": ["a", None, "c"], "camera": ["x", "y", "z"]}), manifest)
    found = ingest.read_manifest(manifest, split="val")
    samples, errors = ingest.probe(found, dataset="d", run_id="r")
    assert samples["label"].to_pylist() == ["a", None] and samples["split"].to_pylist() == ["validation", "validation"]
    assert samples["attributes"].to_pylist()[0] == '{"camera": "x"}'
    assert errors["uri"].to_pylist() == [str(tmp_path / "missing.png")]
    assert "file not found" in errors["reason"][0].as_py()


def test_csv_manifest_relative_uris(image_folder):
    csv = image_folder / "manifest.csv"
    csv.write_text("uri,split\ncat/cat-000.png,train\n")
    (f,) = ingest.read_manifest(csv)
    assert f.uri == str(image_folder / "cat" / "cat-000.png") and f.split == "train"


def test_manifest_without_uri_column(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("path\nx.png\n")
    with pytest.raises(ValueError, match="no 'uri' column"):
        ingest.read_manifest(csv)
