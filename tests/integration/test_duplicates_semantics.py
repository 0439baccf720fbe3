"""Duplicates as FiftyOne defines them, through the jobs on real Ray (kNN), Spark and Delta: a
hand-made chain A–B–C gives A kept, B its duplicate and C kept (greedy), or one group of three
(components); leaks take their own threshold and a list of splits (a field's values or explicit lists)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import local_conf, write_embeddings_run

from brain import runs, sql
from brain.config import LeaksConf
from brain.lake import Lake

pytestmark = pytest.mark.integration

GAP = 0.2
NEAR, FAR = 1 - np.cos(GAP), 1 - np.cos(2 * GAP)  # d(A,B) = d(B,C) = NEAR, d(A,C) = FAR


def test_chain_a_b_c_and_leaks_by_threshold_and_splits(tmp_path, ray_session, spark):
    from jobs import duplicates, leaks, neighbors

    angles = np.array([0.0, GAP, 2 * GAP, np.pi / 2])  # A, B, C and D far away
    vectors = np.stack([np.cos(angles), np.sin(angles), np.zeros(4)], axis=1)
    lake = Lake(tmp_path / "lake")
    a, b, c, d = write_embeddings_run(lake, "chain", "embeddings", vectors, ["x"] * 4,
                                      ["train", "test", "test", "val"])
    conf = local_conf(lake.uri, dataset="chain")
    conf.neighbors.k = 3
    neighbors.run(conf)
    thresh = (NEAR + FAR) / 2
    conf.duplicates = conf.duplicates.model_copy(update=dict(thresh=thresh))
    duplicates.run(conf)
    rows = sql.query(lake, "SELECT kept_sample_id, sample_id, distance FROM duplicates").to_pylist()
    assert [(r["kept_sample_id"], r["sample_id"]) for r in rows] == [(a, b)]  # C is kept: farther than thresh from A
    assert rows[0]["distance"] == pytest.approx(NEAR, abs=1e-5)
    assert dict(runs.get_run(lake, "duplicates")["metrics"])["pairs"] == 2.0  # A–B and B–C within thresh

    conf.duplicates = conf.duplicates.model_copy(update=dict(grouping="components", brain_key="components"))
    duplicates.run(conf)
    grouped = sql.query(lake, "SELECT kept_sample_id, sample_id, distance FROM duplicates "
                              "WHERE brain_key = 'components' ORDER BY sample_id").to_pylist()
    assert [(r["kept_sample_id"], r["sample_id"]) for r in grouped] == [(a, b), (a, c)]
    assert all(r["distance"] == pytest.approx(NEAR, abs=1e-5) for r in grouped)  # to the nearest member

    def leaked(brain_key: str, **options) -> list[tuple[str, str, str]]:
        conf.leaks = LeaksConf(brain_key=brain_key, **options)  # validated, nothing kept from the last call
        leaks.run(conf)
        return [(r["sample_id"], r["split"], r["kept_split"]) for r in sql.query(
            lake, f"SELECT sample_id, split, kept_split FROM leaks WHERE brain_key = '{brain_key}'").to_pylist()]

    assert leaked("all") == [(b, "test", "train")]
    leak_counts = {k: v for k, v in runs.get_run(lake, "all")["metrics"] if k.startswith("leaks:")}
    assert leak_counts == {"leaks:test|train": 1.0}  # (the other metrics: timings)
    assert leaked("tight", thresh=NEAR / 2) == []  # their own threshold: B is farther than that from A
    assert leaked("train_val", splits=["train", "val"]) == []  # B's split is not compared
    assert leaked("listed", splits={"first": [a], "second": [b, d]}) == [(b, "second", "first")]
    with pytest.raises(ValueError, match="split_field 'fold'"):
        leaked("bad", split_field="fold")
