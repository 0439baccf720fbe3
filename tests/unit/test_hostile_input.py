"""Hostile manifests, vectors, SQL and failures at the command line, on a real Delta lake (no engine needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from brain import ingest, runs, sql
from jobs.cli import main as brain_main
from brain.config import IngestConf, RegisterEmbeddingsConf
from brain.errors import plain_text
from brain.lake import Lake
from brain.scan import ScanLock
from brain.sql_expr import UnsafeSQLError, check_condition
from tests.conftest import local_conf, write_image_folder


def _manifest(tmp_path, rows: list[dict]) -> str:
    path = tmp_path / "manifest.csv"
    header = list(rows[0])
    path.write_text("\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n")
    return str(path)


def test_manifest_duplicates_and_split_names(tmp_path):
    paths = write_image_folder(tmp_path / "images", per_class=2)
    rows = [dict(uri=paths[0], label="cat", split="TEST"), dict(uri=paths[1], label="dog", split="val"),
            dict(uri=paths[0], label="dog", split="train")]
    with pytest.raises(ValueError, match=r"row 3: uri .* is listed again \(first at row 1\)"):
        ingest.read_manifest(_manifest(tmp_path, rows))
    found = ingest.read_manifest(_manifest(tmp_path, rows), duplicate_uris="first")
    samples, errors = ingest.probe(found, dataset="d", run_id="r")
    assert sorted(samples["split"].to_pylist()) == ["test", "validation"]  # aliases, any case → canonical names
    assert samples["label"].to_pylist() == ["cat", "dog"]  # the first row won
    assert errors["uri"].to_pylist() == [str(paths[0])] and "row 3 lists this uri again" in errors["reason"][0].as_py()
    with pytest.raises(ValueError, match=r"row 2: unknown split 'bogus'; splits are \['test', 'train', 'validation'\]"):
        ingest.read_manifest(_manifest(tmp_path, [rows[0], dict(uri=paths[1], label="x", split="bogus")]))
    custom = ingest.read_manifest(_manifest(tmp_path, [dict(uri=paths[1], label="x", split="Holdout")]),
                                  splits={"train": [], "holdout": ["ho"]})
    assert custom[0].split == "holdout"


def test_an_ingest_with_a_duplicate_uri_writes_nothing_and_an_http_uri_is_one_error(tmp_path):
    from jobs import ingest as ingest_job

    paths = write_image_folder(tmp_path / "images", per_class=2)
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(manifest=_manifest(tmp_path, [
        dict(uri=paths[0], label="a"), dict(uri="http://example.com/cat.png", label="b"), dict(uri=paths[0], label="c")])))
    lake = Lake(conf.lake)
    assert brain_main(["ingest", "--set", f"lake={conf.lake}", "--manifest", conf.ingest.manifest]) == 2
    assert not lake.exists("samples") and not lake.exists("run_events")
    conf.ingest.duplicate_uris = "first"
    run_id = ingest_job.run(conf)
    assert lake.read("samples").num_rows == 1
    errors = lake.read("ingest_errors", filter=pc.field("run_id") == run_id)
    reasons = dict(zip(errors["uri"].to_pylist(), errors["reason"].to_pylist()))
    assert "cannot open a http:// URI" in reasons["http://example.com/cat.png"] and len(reasons) == 2


def test_registered_vectors_that_overflow_or_have_the_wrong_shape_fail_and_the_current_run_stays(tmp_path):
    from jobs import register_embeddings

    write_image_folder(tmp_path / "images", per_class=2)
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(tmp_path / "images")))
    from jobs import ingest as ingest_job

    ingest_job.run(conf)
    lake = Lake(conf.lake)
    ids = sorted(lake.read("samples", columns=["sample_id"])["sample_id"].to_pylist())
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    good = np.random.default_rng(0).normal(size=(len(ids), 4))
    np.save(tmp_path / "good.npy", good)
    conf.register_embeddings = RegisterEmbeddingsConf(file=str(tmp_path / "good.npy"), ids_file=str(tmp_path / "ids.txt"))
    current = register_embeddings.run(conf)
    metrics = dict(runs.get_run(lake, current)["metrics"])
    assert metrics["prepare_s"] > 0 and metrics["work_s"] > 0  # reading the user's file: work, counted apart
    before = lake.read("embeddings", filter=pc.field("run_id") == current).sort_by("sample_id")

    huge = good.copy()
    huge[3] = 1e30
    np.save(tmp_path / "huge.npy", huge)
    conf.register_embeddings.file = str(tmp_path / "huge.npy")
    with pytest.raises(ValueError, match=rf"sample {ids[3]} has a vector of norm 2e\+30, above 1\.84e\+19"):
        register_embeddings.run(conf)
    for shape in [(len(ids),), (len(ids), 2, 2)]:
        np.save(tmp_path / "bad.npy", np.zeros(shape))
        conf.register_embeddings.file = str(tmp_path / "bad.npy")
        with pytest.raises(ValueError, match=rf"must be a 2-D array \[samples, dimensions\], got shape \({len(ids)},"):
            register_embeddings.run(conf)
    assert runs.latest_succeeded(lake, "embeddings")["run_id"] == current
    assert lake.read("embeddings", filter=pc.field("run_id") == current).sort_by("sample_id").equals(before)


INJECTIONS = [
    "1=1; COPY (SELECT 'x') TO '{out}'; SELECT sample_id FROM samples WHERE 1=1",
    "sample_id IN (SELECT content FROM read_text('/etc/hostname'))",
    "length(read_text('/etc/hostname')) > 0",
    "1=1 UNION SELECT 'x'",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_filters_are_one_expression_and_injections_write_nothing(tmp_path, template):
    out = tmp_path / "pwned.csv"
    text = template.format(out=out)
    with pytest.raises(UnsafeSQLError):
        check_condition(text)
    lake = Lake(tmp_path / "lake")
    assert brain_main(["similar", "--lake", str(lake.uri), "--id", "x", "--where", text]) == 2
    assert not out.exists()


def test_a_planted_sample_filter_is_refused_when_read_and_writes_nothing(tmp_path, capsys):
    lake = Lake(tmp_path / "lake")
    write_image_folder(tmp_path / "images", per_class=1)
    samples, _ = ingest.probe(ingest.discover_folder(tmp_path / "images"), dataset="d", run_id="r")
    lake.upsert("samples", samples, key="sample_id")
    out = tmp_path / "planted.csv"
    for planted in (f"1=1; COPY (SELECT 'x') TO '{out}'; SELECT * FROM samples WHERE 1=1",
                    f"sample_id IN (SELECT 'x' FROM read_text('{tmp_path}/lake/samples/_delta_log/00000000000000000000.json'))"):
        with runs.track(lake, brain_key="planted", method="embeddings", dataset="d", config={}, sample_filter=planted):
            pass
        with pytest.raises(ValueError):
            runs.load_view(lake, "planted")
        assert not out.exists()
    # brain sql reaches files only when asked to
    export = tmp_path / "export.csv"
    copy = f"COPY (SELECT sample_id FROM samples) TO '{export}' (HEADER)"
    assert brain_main(["sql", "--lake", lake.uri, copy]) == 2 and not export.exists()
    assert "file system operations are disabled" in capsys.readouterr().err
    assert brain_main(["sql", "--lake", lake.uri, "--allow-files", copy]) == 0 and export.exists()
    with pytest.raises(ValueError, match="give one statement"):
        sql.query(lake, "SELECT 1; SELECT 2")


def test_expected_failures_print_one_line_with_the_fix_and_exit_2(tmp_path, capsys):
    lake = Lake(tmp_path / "lake")
    images = tmp_path / "images"
    write_image_folder(images, per_class=1)
    args = ["scan", "--set", f"lake={lake.uri}", "--set", f"ingest.source={images}"]
    with ScanLock(lake, "digits"):
        assert brain_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: another scan of this dataset is running") and "Fix:" in err
    assert brain_main(["embed", "--set", "embed.where=1=1; DROP TABLE samples"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "embed.where" in err and "Traceback" not in err
    with ScanLock(lake, "digits"), pytest.raises(Exception, match="another scan"):
        brain_main(["--debug", *args])


def test_conflicts_and_abandoned_runs_are_expected_failures():
    from brain.errors import expected_failure
    from brain.lake import LakeConflictError
    from brain.runs import RunAbandonedError

    conflict = expected_failure(LakeConflictError("commit to uniqueness: gave up after 8 attempts\n(\x1b[31mx\x1b[0m)"))
    assert conflict.startswith("another job wrote the same table") and "Fix: run the command again" in conflict
    assert "\n" not in conflict and "\x1b" not in conflict
    assert "Fix: run the command again" in expected_failure(RunAbandonedError("run r was marked abandoned"))
    assert expected_failure(RuntimeError("a bug")) is None


def test_stored_text_is_plain():
    assert plain_text("\x1b[31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07 a\tb\x07") == "red link a\tb"
    with pytest.raises(UnsafeSQLError, match="is empty"):
        check_condition("   ")
    assert check_condition("split = 'test' -- trailing comment") == "split = 'test'"
    assert pa.array([plain_text("ok")]).to_pylist() == ["ok"]
