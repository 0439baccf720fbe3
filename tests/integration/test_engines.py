"""Engines that stay up: `brain engines up` starts a Ray head and a Spark Connect server on loopback,
jobs join them (`brain run`, one process for several steps) and give the results of jobs that start
their own engines; `brain engines down` stops what up started and nothing else.

One Ray head and one Spark Connect server for the module; their state file is the test's own
(``LAKEBRAIN_STATE_DIR``), so engines another session brought up are never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
import yaml

from brain import runs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BRAIN = str(Path(sys.executable).parent / "brain")


def _env(state_dir: Path) -> dict[str, str]:
    # A local Ray started earlier in this process put its loopback switch and nothing else Ray needs in
    # os.environ; the engines here are found through the state file only.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    return dict(env, PYTHONPATH=str(ROOT), LAKEBRAIN_STATE_DIR=str(state_dir))


def _brain(args: list[str], state_dir: Path, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([BRAIN, *args], env=_env(state_dir), capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def engines_up(tmp_path_factory, small_pipeline):
    """`brain engines up` with the small pipeline's settings; down (and checked to be down) afterwards."""
    state_dir = tmp_path_factory.mktemp("engines-state")
    conf_file = state_dir / "conf.yaml"
    conf_file.write_text(yaml.safe_dump(small_pipeline.conf.model_dump()))
    try:
        _brain(["engines", "up", "--conf", str(conf_file)], state_dir)
        yield state_dir, conf_file
    finally:
        _brain(["engines", "down"], state_dir, check=False)


def _started_processes(state: dict) -> list[int]:
    """The pids still alive among the processes `up` started (Ray's process group, the Connect server)."""
    alive = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    ray_group = [int(p.name) for p in alive if _pgid(p) == state["ray"]["pgid"]]
    return ray_group + [pid for pid in [state["spark"]["pid"]] if Path(f"/proc/{pid}").exists()]


def _pgid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rpartition(")")[2].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def test_jobs_joined_to_running_engines_give_the_results_of_jobs_that_start_their_own(engines_up, small_pipeline,
                                                                                      tmp_path):
    state_dir, conf_file = engines_up
    status = _brain(["engines", "status"], state_dir).stdout
    assert "ray: 127.0.0.1:" in status and "spark: sc://127.0.0.1:" in status and "not answering" not in status

    pipeline = small_pipeline.copy(tmp_path / "lake")  # its kNN and uniqueness runs: jobs that started their own
    conf = yaml.safe_load(conf_file.read_text())
    conf["lake"] = pipeline.conf.lake
    joined_conf = tmp_path / "joined.yaml"
    joined_conf.write_text(yaml.safe_dump(conf))
    out = _brain(["run", "neighbors", "uniqueness", "--conf", str(joined_conf)], state_dir)
    assert "neighbors: run" in out.stdout and "uniqueness: run" in out.stdout, out.stdout

    lake = pipeline.lake
    knn, unique = runs.latest_succeeded(lake, "knn"), runs.latest_succeeded(lake, "uniqueness")
    assert knn["run_id"] != pipeline.run_ids["neighbors"] and unique["run_id"] != pipeline.run_ids["uniqueness"]
    state = json.loads((state_dir / "engines.json").read_text())
    assert state["ray"]["address"] in knn["executed_on"]
    assert state["spark"]["remote"] in unique["executed_on"]

    def rows(table: str, run_id: str, column: str) -> dict:
        found = lake.read(table, columns=["sample_id", column], filter=pc.field("run_id") == run_id)
        return dict(zip(found["sample_id"].to_pylist(), found[column].to_pylist()))

    original, joined = pipeline.run_ids["neighbors"], knn["run_id"]
    assert rows("neighbors", joined, "neighbor_ids") == rows("neighbors", original, "neighbor_ids")
    expected = rows("neighbors", original, "distances")
    assert all(np.allclose(d, expected[s], atol=1e-5) for s, d in rows("neighbors", joined, "distances").items())
    scores, expected = rows("uniqueness", unique["run_id"], "uniqueness"), rows("uniqueness", pipeline.run_ids["uniqueness"], "uniqueness")
    assert len(scores) >= 45 and scores.keys() == expected.keys()
    assert np.allclose([scores[s] for s in expected], list(expected.values()), atol=1e-9)

    # start-up honesty: the first step joined the engines, the second found them joined
    metrics = {r["brain_key"]: dict(r["metrics"]) for r in (knn, unique)}
    assert metrics["knn"]["engine_start_s"] > 0 and metrics["knn"]["work_s"] > 0
    assert metrics["uniqueness"]["work_s"] > 0 and metrics["uniqueness"]["engine_start_s"] >= 0


def test_engines_down_stops_what_up_started_and_nothing_else(engines_up):
    state_dir, _ = engines_up
    state = json.loads((state_dir / "engines.json").read_text())
    assert _started_processes(state)
    bystander = subprocess.Popen(["sleep", "60"])  # a process of ours that `down` must leave alone
    try:
        out = _brain(["engines", "down"], state_dir).stdout
        assert "stopped" in out
        assert _started_processes(state) == []
        assert bystander.poll() is None
        assert not (state_dir / "engines.json").exists()
        assert _brain(["engines", "status"], state_dir).stdout.startswith("no engines up")
    finally:
        bystander.kill()
