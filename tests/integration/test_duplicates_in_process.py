"""Near duplicates by embedding distance in the driver's process: the same rows as the Spark job, over a
real kNN run (Ray, FAISS) whose graph still lists samples removed from the dataset since."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from tests.conftest import local_conf, write_embeddings_run

from brain import runs
from brain.lake import Lake, plain_strings

pytestmark = pytest.mark.integration

COLUMNS = ["group_id", "kept_sample_id", "sample_id", "distance"]


def _rows(lake: Lake, run_id: str) -> list[tuple]:
    rows = plain_strings(lake.read("duplicates", columns=COLUMNS, filter=pc.field("run_id") == run_id))
    return sorted(zip(*(rows[c].to_pylist() for c in COLUMNS)))


def _vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """A power-law spectrum with overlapping modes, and near copies at graded distances (some close, some not)."""
    scales = 1.0 / np.sqrt(np.arange(1, dim + 1))
    modes = rng.normal(size=(6, dim)) * scales * 1.5
    base = modes[rng.integers(0, 6, n)] + rng.normal(size=(n, dim)) * scales
    copies = rng.choice(n, n // 4, replace=False)
    noise = rng.normal(size=(len(copies), dim)) * scales * rng.uniform(0.02, 0.4, (len(copies), 1))
    return np.concatenate([base, base[copies] + noise])


def test_in_process_duplicates_match_spark_for_thresh_and_fraction(tmp_path, ray_session, spark):
    from jobs import duplicates, neighbors

    lake = Lake(tmp_path / "lake")
    vectors = _vectors(np.random.default_rng(7), 240, 24)
    ids = write_embeddings_run(lake, "pets", "embeddings", vectors, ["x"] * len(vectors), ["train"] * len(vectors))
    conf = local_conf(lake.uri)
    conf.neighbors.k = 6
    neighbors.run(conf)
    knn = runs.latest_succeeded(lake, "knn")["run_id"]
    gone = ids[::25]  # removed since the graph was made: their rows and the edges to them do not count
    lake.delete_where("samples", "sample_id IN ({})".format(", ".join(f"'{s}'" for s in gone)))
    first = pc.list_element(lake.read("neighbors", columns=["distances"])["distances"], 0).to_numpy()

    for name, settings in {"thresh": {"thresh": float(np.quantile(first, 0.4))},
                           "fraction": {"thresh": None, "fraction": 0.15, "grouping": "components"}}.items():
        conf.duplicates = conf.duplicates.model_copy(update={"brain_key": f"{name}_spark", **settings})
        on_spark = duplicates.run(conf)
        conf.duplicates = conf.duplicates.model_copy(update={"brain_key": f"{name}_driver"})
        in_process = duplicates.run(conf, in_process=True)
        expected = _rows(lake, on_spark)
        assert expected and _rows(lake, in_process) == expected, name
        assert not {s for row in expected for s in row[:3]} & set(gone)
        spark_run, driver_run = runs.get_run(lake, on_spark), runs.get_run(lake, in_process)
        assert spark_run["executed_on"].startswith("spark=") and driver_run["executed_on"].startswith("driver")
        assert dict(driver_run["input_run_ids"]) == {"neighbors": knn}
        metrics = [{k: dict(r["metrics"])[k] for k in ("pairs", "thresh", "groups")} for r in (spark_run, driver_run)]
        assert metrics[0] == metrics[1]
        # batch by batch: the rows do not depend on how many kNN rows a batch holds
        small = duplicates.near_rows_in_process(lake, conf, knn, {}, batch_rows=17)
        assert sorted(zip(*(small[c].to_pylist() for c in COLUMNS))) == expected, name

    conf.duplicates = conf.duplicates.model_copy(update={"fraction": None, "thresh": None})
    with pytest.raises(ValueError, match="pixel verification run on Spark"):
        duplicates.run(conf, in_process=True)
