"""Job configuration: one YAML file validated by pydantic, plus ``a.b=value`` overrides.

``conf/local.yaml`` is the embedded default (a local Ray, a local Spark session and
a lake in a local folder). A cluster is only another file: the jobs read the same
fields whatever runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RayConf(_Section):
    address: str | None = None  # None: join RAY_ADDRESS if set, else start a local Ray
    num_cpus: int | None = None  # only for a local Ray
    include_dashboard: bool = False
    actor_num_cpus: float = Field(0.5, gt=0)  # fractional, so read tasks are never starved
    num_actors: int = Field(1, ge=1)
    num_gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    read_parallelism: int = Field(4, ge=1)


class SparkConf(_Section):
    master: str = "local[*]"
    app_name: str = "lakebrain"
    conf: dict[str, str] = Field(default_factory=dict)


class IngestConf(_Section):
    source: str | None = None  # a folder in class-per-subfolder layout
    manifest: str | None = None  # a CSV or Parquet file with a `uri` column
    split: str | None = None  # split for every sample when the source names none


class EmbedConf(_Section):
    brain_key: str = "embeddings"
    model: str | None = None  # None: the default model (see brain.models)
    batch_size: int = Field(256, ge=1)


class NeighborsConf(_Section):
    brain_key: str = "knn"
    embeddings_key: str = "embeddings"
    k: int = Field(10, ge=1)
    metric: Literal["cosine", "l2"] = "cosine"
    shards: int = Field(2, ge=1)  # query shards searched by parallel Ray tasks


class UniquenessConf(_Section):
    brain_key: str = "uniqueness"
    neighbors_key: str = "knn"
    weights: list[float] = Field(default_factory=lambda: [0.6, 0.3, 0.1])

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: list[float]) -> list[float]:
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return weights


class FamiliarityConf(_Section):
    brain_key: str = "familiarity"
    embeddings_key: str = "embeddings"  # the embeddings run the model is fit on
    fit_split: str | None = None  # fit only on samples of this split (e.g. train); None: all
    score_key: str | None = None  # embeddings run to score; None: the fit run (every sample)
    per: Literal["label", "split"] | None = None  # one density per label or per split
    reduced_dims: int = Field(40, ge=1)
    gaussian_count: int = Field(5, ge=1)
    covariance_type: Literal["full", "diag"] = "full"
    convergence_threshold: float = Field(1e-3, gt=0)
    max_iterations: int = Field(100, ge=1)
    max_fit_samples: int = Field(100_000, ge=2)  # fit on a random sample of at most this many rows
    seed: int = 0
    extremes_count: int = Field(10, ge=1)  # most/least familiar samples kept per label


class ComparisonConf(_Section):
    brain_key: str = "comparison"
    fit: str | None = None  # EMBEDDINGS_KEY_OR_DATASET[@SPLIT], see brain.comparison
    predict: str | None = None
    folds: int = Field(5, ge=2)  # cross-fitting folds (density parameters: the familiarity section)


class VisualizationConf(_Section):
    brain_key: str = "visualization"
    embeddings_key: str = "embeddings"
    method: Literal["umap", "tsne", "pca"] = "umap"
    num_dims: Literal[2, 3] = 2
    max_fit_samples: int = Field(50_000, ge=5)  # fit the map on this many; place the rest in parallel
    seed: int = 0
    shards: int = Field(4, ge=1)  # Ray tasks placing the rows outside the fit sample


class Conf(_Section):
    lake: str = "lake"  # a relative folder is taken from the working directory
    dataset: str = "default"
    ray: RayConf = Field(default_factory=RayConf)
    spark: SparkConf = Field(default_factory=SparkConf)
    ingest: IngestConf = Field(default_factory=IngestConf)
    embed: EmbedConf = Field(default_factory=EmbedConf)
    neighbors: NeighborsConf = Field(default_factory=NeighborsConf)
    uniqueness: UniquenessConf = Field(default_factory=UniquenessConf)
    familiarity: FamiliarityConf = Field(default_factory=FamiliarityConf)
    comparison: ComparisonConf = Field(default_factory=ComparisonConf)
    visualization: VisualizationConf = Field(default_factory=VisualizationConf)


class ConfError(ValueError):
    """A config file or override that cannot be used; the message names the field."""


def load_conf(path: str | Path | None = None, overrides: list[str] | None = None) -> Conf:
    """Read ``path`` (default ``conf/local.yaml``), apply ``key.sub=value`` overrides, validate."""
    path = Path(path) if path else DEFAULT_CONF
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfError(f"config file {path} must hold a mapping at the top level")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfError(f"override {item!r} must look like section.field=value")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    try:
        return Conf.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfError(f"invalid config {path}: {problems}") from None
