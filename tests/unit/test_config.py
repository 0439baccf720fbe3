from pathlib import Path

import pytest

from brain.config import ConfError, load_conf


def test_local_default_is_valid():
    conf = load_conf()
    assert conf.lake == "lake" and conf.spark.master.startswith("local")
    assert conf.ray.actor_num_cpus < 1  # whole-CPU actors starve the read tasks on 2 cores


def test_overrides_are_parsed_as_yaml_values():
    conf = load_conf(None, ["neighbors.k=20", "neighbors.metric=l2", "uniqueness.weights=[0.5, 0.5]"])
    assert conf.neighbors.k == 20 and conf.neighbors.metric == "l2" and conf.uniqueness.weights == [0.5, 0.5]


@pytest.mark.parametrize("override, match", [
    ("neighbors.k=0", "neighbors.k"),
    ("neighbors.metric=manhattan", "neighbors.metric"),
    ("embed.nope=1", "embed.nope"),
    ("uniqueness.weights=[-1]", "uniqueness.weights"),
    ("novalue", "must look like"),
])
def test_bad_values_name_the_field(override, match):
    with pytest.raises(ConfError, match=match):
        load_conf(None, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfError, match="not found"):
        load_conf(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lake: [unclosed\n")
    with pytest.raises(ConfError, match="not valid YAML"):
        load_conf(bad)


@pytest.mark.parametrize("name", ["conf-ray.yaml", "conf-spark-standalone.yaml", "conf-spark-k8s.yaml"])
def test_shipped_cluster_configs_are_valid(name):
    """They must load with the current schema (sections forbid unknown keys) and point at a shared lake."""
    conf = load_conf(Path(__file__).resolve().parents[2] / "cluster" / name)
    assert conf.lake.startswith("s3://")
