"""The unique job after added, then removed samples: the rows of a from-scratch run, with only the work the change needs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from brain import runs
from brain.lake import Lake
from brain.schemas import EMBEDDINGS, SAMPLES
from tests.conftest import local_conf

pytestmark = pytest.mark.integration

D, N, PICKS = 16, 600, 20


def add_samples(lake: Lake, start: int, count: int) -> list[str]:
    ids = [f"pets-{i:05d}" for i in range(start, start + count)]
    now = dt.datetime.now(dt.UTC)
    lake.append("samples", pa.Table.from_pylist(
        [{"sample_id": s, "dataset": "pets", "uri": f"/data/{s}.png", "split": "train", "label": "cat", "width": 8,
          "height": 8, "content_hash": s, "size_bytes": 64, "attributes": "{}", "ingested_at": now} for s in ids],
        schema=SAMPLES))
    return ids


def embed(lake: Lake, vectors: dict[str, np.ndarray], carried_from: str | None) -> str:
    """An embeddings run of every sample in ``vectors``, carried over from ``carried_from`` as the scan's embedding is."""
    inputs = {} if carried_from is None else {"carried_from": carried_from}
    with runs.track(lake, brain_key="embeddings", method="embeddings", dataset="pets", config={},
                    inputs=inputs) as run:
        ids = sorted(vectors)
        lake.append("embeddings", pa.table({
            "run_id": [run.run_id] * len(ids), "sample_id": ids,
            "vector": pa.array([vectors[i].tolist() for i in ids], pa.list_(pa.float32()))}, schema=EMBEDDINGS))
    return run.run_id


def picks(lake: Lake, key: str) -> tuple[list[str], dict[str, float]]:
    run = runs.latest_succeeded(lake, key)
    rows = lake.read("unique", filter=pc.field("run_id") == run["run_id"]).sort_by("rank")
    return rows["sample_id"].to_pylist(), dict(run["metrics"])


def test_unique_extends_its_previous_run_and_matches_a_full_run(tmp_path):
    from jobs import unique

    rng = np.random.default_rng(5)
    scales = 1 / np.sqrt(np.arange(1, D + 1))
    centres = rng.normal(size=(6, D)) * scales * 1.5

    def draw(count: int, spread: float = 1.0) -> np.ndarray:
        return (centres[rng.integers(0, 6, count)] + spread * rng.normal(size=(count, D)) * scales).astype(np.float32)

    conf = local_conf(tmp_path / "lake")
    conf.unique.n, conf.unique.metric = PICKS, "l2"
    lake = Lake(conf.lake)
    vectors = dict(zip(add_samples(lake, 0, N), draw(N)))
    emb = embed(lake, vectors, None)
    unique.run(conf)
    assert picks(lake, "unique")[1]["full"] == 1.0

    def again_and_from_scratch(name: str) -> tuple[list[str], dict[str, float]]:
        unique.run(conf)
        scratch = conf.model_copy(deep=True)
        scratch.unique.brain_key = f"unique_{name}"
        unique.run(scratch)
        assert picks(lake, f"unique_{name}")[1]["full"] == 1.0
        result = picks(lake, "unique")
        assert result[0] == picks(lake, f"unique_{name}")[0]
        return result

    # next to the first pick, a little farther from the mean: no pick changes
    first = vectors[picks(lake, "unique")[0][0]]
    outward = first - np.mean(list(vectors.values()), axis=0)
    near = (first + 0.1 * outward + 0.01 * rng.normal(size=(6, D)) * scales).astype(np.float32)
    vectors |= dict(zip(add_samples(lake, N, len(near)), near))
    emb = embed(lake, vectors, emb)
    _, metrics = again_and_from_scratch("inside")
    assert (metrics["full"], metrics["resumed_from_step"], metrics["new_samples"]) == (0.0, PICKS + 1, 6.0)

    # outside the data in opposite pairs about the mean: the greedy reaches them after some picks
    mean = np.mean(list(vectors.values()), axis=0)
    out = draw(2) * 4.0
    far = np.vstack([mean + out, mean - out]).astype(np.float32)
    far_ids = add_samples(lake, N + 10, len(far))
    vectors |= dict(zip(far_ids, far))
    emb = embed(lake, vectors, emb)
    chosen, metrics = again_and_from_scratch("outside")
    assert metrics["full"] == 0.0 and 2 <= metrics["resumed_from_step"] <= PICKS
    assert set(far_ids) & set(chosen[int(metrics["resumed_from_step"]) - 1:])

    # a removed sample: a full run
    del vectors[chosen[-1]]
    emb = embed(lake, vectors, emb)
    _, metrics = again_and_from_scratch("removed")
    assert metrics["full"] == 1.0

    # many new samples like the old ones (M·n > N: every vector is read at once), after the full run
    vectors |= dict(zip(add_samples(lake, N + 20, 40), draw(40)))
    embed(lake, vectors, emb)
    _, metrics = again_and_from_scratch("many")
    assert metrics["new_samples"] == 40.0
