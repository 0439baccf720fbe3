"""A custom familiarity strategy by import path in the Spark job: fit on the driver, stored without pickle
(its own save/load), reloaded by the Spark workers that score; one without save/load is refused."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from tests.conftest import local_conf, write_embeddings_run

from brain import results, runs
from brain.lake import Lake

pytestmark = pytest.mark.integration

STRATEGY = '''"""A user's density: scaled squared distance to the mean."""
import numpy as np


class DistanceToMean:
    def __init__(self, scale=1.0):
        self.scale = scale

    def fit(self, vectors):
        self.mean_ = vectors.mean(axis=0)
        return self

    def score(self, vectors):
        return self.scale * ((vectors - self.mean_) ** 2).sum(axis=1)

    def save(self, file):
        np.save(file, np.r_[self.scale, self.mean_], allow_pickle=False)

    @classmethod
    def load(cls, file):
        values = np.load(file, allow_pickle=False)
        density = cls(float(values[0]))
        density.mean_ = values[1:]
        return density


class Unsaveable:
    def fit(self, vectors):
        return self

    def score(self, vectors):
        return np.zeros(len(vectors))
'''


@pytest.fixture
def user_code(tmp_path):
    package = tmp_path / "code" / "mydensity"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "density.py").write_text(STRATEGY)
    return package


def test_a_custom_strategy_fits_scores_on_spark_and_reloads_without_pickle(tmp_path, user_code, spark):
    from jobs import familiarity

    x = np.random.default_rng(0).normal(size=(80, 6))
    lake = Lake(tmp_path / "lake")
    ids = write_embeddings_run(lake, "pets", "embeddings", x, labels=["a"] * 80, splits=["train"] * 80)
    conf = local_conf(lake.uri)
    conf.code_paths = [str(user_code)]
    conf.familiarity = conf.familiarity.model_copy(update=dict(strategy="mydensity.density:DistanceToMean",
                                                               strategy_params={"scale": 2.0}))
    familiarity.run(conf)

    loaded = results.load_results(lake, "familiarity")
    density = loaded.model.densities_[0]
    assert type(density).__name__ == "DistanceToMean" and density.scale == 2.0
    stored = x.astype(np.float32).astype(np.float64)  # the lake keeps float32 vectors
    expected = 2.0 * ((stored - stored.mean(axis=0)) ** 2).sum(axis=1)
    got = dict(zip(loaded.scores["sample_id"].to_pylist(), loaded.scores["score"].to_pylist()))
    np.testing.assert_allclose([got[s] for s in ids], expected, rtol=1e-5)  # scored by the Spark workers
    # the stored model: a JSON header with the class's import path and the strategy's own bytes
    run_id = runs.latest_succeeded(lake, "familiarity")["run_id"]
    blob = lake.read_artifact(run_id, results.FAMILIARITY_MODEL_ARTIFACT)
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        assert "mydensity.density:DistanceToMean" in str(data["header"])
    assert all(not name.endswith(".pkl") for name in zipfile.ZipFile(io.BytesIO(blob)).namelist())


def test_a_strategy_without_save_and_load_is_refused_by_name(tmp_path, user_code, spark):
    from jobs import familiarity

    lake = Lake(tmp_path / "lake")
    write_embeddings_run(lake, "pets", "embeddings", np.random.default_rng(0).normal(size=(20, 3)),
                         labels=["a"] * 20, splits=["train"] * 20)
    conf = local_conf(lake.uri)
    conf.code_paths = [str(user_code)]
    conf.familiarity.strategy = "mydensity.density:Unsaveable"
    with pytest.raises(TypeError, match="mydensity.density:Unsaveable has no save or load"):
        familiarity.run(conf)
    assert lake.read("familiarity").num_rows == 0
    conf.familiarity.strategy = "mydensity.density:NoSuchClass"
    with pytest.raises(ValueError, match="has no attribute 'NoSuchClass'"):
        familiarity.run(conf)
