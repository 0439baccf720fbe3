"""Processes that succeeded exit 0, every time: each `brain` verb and a plain library script, run repeatedly.

A committed run whose process then aborts at interpreter exit (exit 134 "terminate called without
an active exception", 139, or a hang) makes a scheduler retry a job that succeeded. The source:
Arrow dataset scans over deltalake's default ``PyFileSystem`` that are still in flight when the
interpreter finalizes (a DuckDB scan stopped by LIMIT, a scanner whose last fragment is released
on an Arrow thread): the thread needs the GIL (to read, or to drop the Python filesystem), Python
ends it with ``pthread_exit``, and the forced unwind through C++ ``noexcept`` frames aborts.
Every lake read now goes through Arrow's own filesystem (``brain.lake.Lake.dataset``), which
never needs the GIL, so nothing is left to abort.

Tiers: the integration tier runs the library script and the SQL-reading verbs (sql, similar) 30
times, the other engine-free verbs 5 times and the engine verbs twice; the `stress` tier
(``make test-stress``, not in CI: about an hour on 2 cores) runs every verb 30 times.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

REPEATS = 30
FEW_REPEATS = 5
ENGINE_REPEATS = 2
# The verbs whose DuckDB scans stop early: the ones that aborted; 30 times in the integration tier too.
EARLY_STOPPING = {"sql", "similar"}

# A library user: no engine, only `brain` functions. Its SQL stops early (LIMIT) over a table of
# several files (argv[3], written once by the fixture): with deltalake's Python filesystem this
# left Arrow reads in flight at exit and aborted about 2 runs in 3.
LIBRARY_SCRIPT = textwrap.dedent("""
    import sys
    from brain import ingest, runs, sql
    from brain.lake import Lake

    lake = Lake(sys.argv[1])
    files = ingest.discover_folder(sys.argv[2])
    with runs.track(lake, brain_key="ingest_script", method="ingest", dataset="script", config={}) as run:
        samples, errors = ingest.probe(files, dataset="script", run_id=run.run_id)
        lake.append("samples", samples)
    assert sql.query(lake, "SELECT count(*) AS n FROM samples")["n"][0].as_py() == samples.num_rows
    found = sql.query(Lake(sys.argv[3]), "SELECT sample_id FROM embeddings_history LIMIT 3")
    assert found.num_rows == 3, found
    print("library script done")
""")


def write_wide_table(lake_path: Path, *, files: int = 12, rows: int = 5000, dim: int = 64) -> None:
    """An embeddings table of ``files`` Parquet files (one append each): enough reads to be in flight."""
    import numpy as np
    import pyarrow as pa

    from brain.lake import Lake
    from brain.schemas import EMBEDDINGS

    lake, rng = Lake(lake_path), np.random.default_rng(0)
    for part in range(files):
        ids = [f"{part}-{i}" for i in range(rows)]
        lake.append("embeddings", pa.table({"run_id": ["wide"] * rows, "sample_id": ids, "vector": pa.array(
            rng.normal(size=(rows, dim)).astype(np.float32).tolist(), pa.list_(pa.float32()))}, schema=EMBEDDINGS))


# Verbs in pipeline order, each with the arguments that make it succeed on the tiny lake.
ENGINE_FREE = {
    "ingest": ["--source", "{images}"],
    "unique": ["--set", "unique.n=5"],
    "linear-probe": [],
    "hardness": [],
    "compare": ["--fit", "embeddings", "--predict", "embeddings"],
    "sql": ["SELECT sample_id FROM embeddings_history LIMIT 2", "--lake", "{wide}", "--format", "csv"],
    "runs": ["list"],
    "similar": ["--id", "{sample_id}", "-k", "3", "--format", "csv"],
    "models": ["list"],
}
ENGINE = {
    "embed": [],
    "neighbors": [],
    "uniqueness": [],
    "duplicates": [],
    "leaks": [],
    "label-quality": [],
    "familiarity": [],
    "visualize": ["--set", "visualization.method=pca"],
    "scan": [],
}
NO_CONF = {"models"}


@pytest.fixture(scope="module")
def tiny_lake(tmp_path_factory, small_pipeline):
    """A copy of the session's small pipeline (+ predictions, so every verb above succeeds) and a lake
    with one table of many files for the early-stopping SQL."""
    root = tmp_path_factory.mktemp("exit")
    mine = small_pipeline.copy(root / "lake")
    conf = mine.conf
    conf.familiarity.reduced_dims, conf.familiarity.gaussian_count = 4, 2
    conf.comparison.folds = 2
    conf_file = root / "conf.yaml"
    conf_file.write_text(yaml.safe_dump(conf.model_dump()))
    _assert_exit_0(_brain(conf_file, "linear-probe", []))
    sample_id = mine.lake.read("samples", columns=["sample_id"])["sample_id"][0].as_py()
    write_wide_table(root / "wide-lake")
    return conf_file, {"images": str(mine.images), "sample_id": sample_id, "wide": str(root / "wide-lake")}, root


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS="")


def _brain(conf_file: Path, verb: str, args: list[str], values: dict | None = None) -> subprocess.CompletedProcess:
    args = [a.format(**(values or {})) for a in args]
    conf_args = [] if verb in NO_CONF else ["--conf", str(conf_file)]
    return subprocess.run([sys.executable, "-m", "jobs.cli", verb, *conf_args, *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)


def _assert_exit_0(done: subprocess.CompletedProcess, label: str = "") -> None:
    assert done.returncode == 0, f"{label} exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_a_library_script_exits_0_every_time(tiny_lake):
    _, values, root = tiny_lake
    script = root / "library_script.py"
    script.write_text(LIBRARY_SCRIPT)
    for attempt in range(REPEATS):
        done = subprocess.run([sys.executable, str(script), str(root / f"script-lake-{attempt}"),
                               values["images"], values["wide"]], cwd=root, env=_env(),
                              capture_output=True, text=True, timeout=300)
        _assert_exit_0(done, f"attempt {attempt}")
        assert "library script done" in done.stdout


def _repeat(tiny_lake, verb: str, args: list[str], times: int) -> None:
    conf_file, values, _ = tiny_lake
    for attempt in range(times):
        _assert_exit_0(_brain(conf_file, verb, args, values), f"brain {verb} attempt {attempt}")


@pytest.mark.parametrize("verb", sorted(ENGINE_FREE))
def test_engine_free_verbs_exit_0(tiny_lake, verb):
    _repeat(tiny_lake, verb, ENGINE_FREE[verb], REPEATS if verb in EARLY_STOPPING else FEW_REPEATS)


@pytest.mark.parametrize("verb", list(ENGINE))
def test_engine_verbs_exit_0(tiny_lake, verb):
    _repeat(tiny_lake, verb, ENGINE[verb], ENGINE_REPEATS)


@pytest.mark.stress
@pytest.mark.parametrize("verb", [*ENGINE_FREE, *ENGINE])
def test_every_verb_exits_0_thirty_times(tiny_lake, verb):
    _repeat(tiny_lake, verb, {**ENGINE_FREE, **ENGINE}[verb], REPEATS)


def test_a_job_module_ends_like_its_verb(tiny_lake):
    """`python -m jobs.NAME` and `brain NAME` print the same last line and exit the same way."""
    conf_file, values, _ = tiny_lake
    module = subprocess.run([sys.executable, "-m", "jobs.unique", "--conf", str(conf_file), "--set", "unique.n=5"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    verb = _brain(conf_file, "unique", ENGINE_FREE["unique"], values)
    for done in (module, verb):
        _assert_exit_0(done)
    last = [done.stdout.strip().splitlines()[-1] for done in (module, verb)]
    assert [line.split()[0] + " " + line.split()[2] for line in last] == ["run succeeded;"] * 2
    assert last[0].split("lake: ")[1] == last[1].split("lake: ")[1]
