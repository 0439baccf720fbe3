"""The Python API's plumbing without engines: entry points name the job registry, kwargs are config fields."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import brain
from brain import api
from brain.config import ConfError
from brain.plugins import import_object
from jobs.engines import stop_engines
from jobs.registry import load_jobs

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_declares_the_jobs_and_engines_entry_points():
    points = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]
    assert import_object(points[api.JOBS_GROUP]["lakebrain"], what="entry point") is load_jobs
    assert import_object(points[api.ENGINES_GROUP]["lakebrain"], what="entry point") is stop_engines


def test_no_installed_jobs_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(api, "entry_points", lambda group: [])
    with pytest.raises(RuntimeError, match="no lakebrain jobs are installed.*pip install -e"):
        api.installed_jobs()


def test_open_lake_takes_overrides_and_names_a_bad_field(tmp_path):
    lake = brain.open_lake(tmp_path / "lake", overrides={"neighbors.k": 7}, dataset="pets")
    assert (lake.conf.neighbors.k, lake.conf.dataset, lake.lake.uri) == (7, "pets", str(tmp_path / "lake"))
    assert brain.open_lake(tmp_path / "lake", overrides=["neighbors.k=8"]).conf.neighbors.k == 8
    with pytest.raises(ConfError, match="open_lake: unknown argument 'neighbors.kk'.*fields: brain_key"):
        brain.open_lake(tmp_path / "lake", overrides={"neighbors.kk": 7})
    with pytest.raises(ConfError, match="neighbors.k: Input should be greater than or equal to 1"):
        brain.open_lake(tmp_path / "lake", overrides={"neighbors.k": 0})


def test_run_job_refuses_an_unknown_job_section_or_field_before_running(tmp_path, monkeypatch):
    # the entry points as pyproject.toml declares them (a source checkout may not be reinstalled yet)
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"]
    monkeypatch.setattr(api, "entry_points", lambda group: [
        EntryPoint(name, value, group) for name, value in declared[group].items()])
    lake = brain.open_lake(tmp_path / "lake")
    with pytest.raises(ValueError, match="no job 'uniq' is installed"):
        lake.run_job("uniq", "uniqueness", {})
    with pytest.raises(ConfError, match="'code_paths' is not a config section"):
        lake.run_job("uniqueness", "code_paths", {})
    with pytest.raises(ConfError, match="unknown argument 'neighbour_key'"):
        lake.compute_uniqueness(neighbour_key="knn")
    with pytest.raises(ValueError, match="needs sample_ids, one per row"):
        lake.compute_embeddings(embeddings=[[0.0, 1.0]])
