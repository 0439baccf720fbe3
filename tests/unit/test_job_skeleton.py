"""The job skeleton: one declaration per job drives the CLI verbs, `brain submit` and `python -m jobs.NAME`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from brain.config import Conf
from brain.schemas import TABLES
from jobs import registry
from jobs.cli import build_parser

JOBS_DIR = Path(registry.__file__).resolve().parent


@pytest.fixture(scope="module")
def jobs() -> dict[str, registry.Job]:
    return registry.load_jobs()


def _subparsers(parser) -> dict:
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def test_every_module_declaring_a_job_is_listed_once():
    declaring = {f"jobs.{path.stem}" for path in JOBS_DIR.glob("*.py")
                 if any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "JOB" for t in node.targets)
                        for node in ast.parse(path.read_text()).body)}
    assert declaring == set(registry.JOB_MODULES)
    assert len(registry.JOB_MODULES) == len(set(registry.JOB_MODULES)) == 21


def test_declarations_name_real_tables_and_config_fields(jobs):
    fields = Conf().model_dump()
    for job in jobs.values():
        assert job.engine in ("ray", "spark", "driver")
        assert job.writes, f"{job.name} declares no output"
        assert set(job.reads) | set(job.writes) <= set(TABLES), job.name
        assert job.script.is_file() and job.module in registry.JOB_MODULES
        for option in job.options:
            node = fields
            for part in option.field.split("."):
                assert part in node, f"{job.name} {option.flag}: no config field {option.field}"
                node = node[part]


def test_every_job_is_a_verb_and_submittable(jobs):
    parser = build_parser(jobs)
    verbs = _subparsers(parser)
    assert set(jobs) <= set(verbs)
    submit = _subparsers(verbs["submit"])
    assert set(submit) == set(jobs)
    help_text = verbs["submit"].format_help()
    for name in jobs:
        assert name in help_text
    for job in jobs.values():
        assert verbs[job.name].description == submit[job.name].description == job.help


def test_a_job_option_sets_its_config_field_and_clears_the_alternative(jobs, tmp_path):
    ingest = jobs["ingest"]
    conf_file = tmp_path / "conf.yaml"
    conf_file.write_text(f"lake: {tmp_path / 'lake'}\ningest:\n  manifest: files.csv\n")
    for argv in (["ingest", "--conf", str(conf_file), "--source", "images", "--dataset", "pets"],
                 ["submit", "ingest", "--conf", str(conf_file), "--source", "images", "--dataset", "pets"]):
        args = build_parser(jobs).parse_args(argv)
        conf = ingest.conf(args)
        assert (conf.ingest.source, conf.ingest.manifest, conf.dataset) == ("images", None, "pets")
    # without the option the file's value stands
    conf = ingest.conf(build_parser(jobs).parse_args(["ingest", "--conf", str(conf_file)]))
    assert conf.ingest.manifest == "files.csv"


def test_the_same_declaration_parses_python_dash_m_arguments(jobs):
    compare = jobs["compare"]
    import argparse

    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    conf = compare.conf(parser.parse_args(["--fit", "embeddings@train", "--predict", "embeddings@test",
                                           "--set", "comparison.folds=3"]))
    assert (conf.comparison.fit, conf.comparison.predict, conf.comparison.folds) == (
        "embeddings@train", "embeddings@test", 3)


def test_a_wrong_engine_is_refused():
    with pytest.raises(ValueError, match="engine must be ray, spark or driver"):
        registry.Job(name="x", engine="dask", help="", reads=(), writes=("samples",), run=lambda conf: "")


def test_a_verb_finds_its_module_without_importing_the_others(jobs):
    assert {name: registry.module_for(name) for name in jobs} == {name: job.module for name, job in jobs.items()}
    assert registry.module_for("sql") is None and registry.module_for("no-such-job") is None
    assert list(registry.load_jobs(["visualize", "no-such-job", "visualize"])) == ["visualize"]
