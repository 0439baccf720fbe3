"""Job configuration: one YAML file validated by pydantic, plus ``a.b=value`` overrides.

``conf/local.yaml`` is the embedded default (a local Ray, a local Spark session and
a lake in a local folder). A cluster is only another file: the jobs read the same
fields whatever runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from brain.methods import uniqueness as uniqueness_method
from brain.images import MAX_BYTES, MAX_PIXELS, MAX_SIDE, TIMEOUT_S, DecodeLimits
from brain.ingest import SPLITS
from brain.sql_expr import check_condition

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


class SparkConf(_Section):
    master: str = "local[*]"  # a local session on every core; spark://, k8s://, yarn for a cluster
    remote: str | None = None  # a Spark Connect server (sc://host:15002): jobs join it instead of starting Spark
    app_name: str = "lakebrain"
    conf: dict[str, str] = Field(default_factory=dict)


class IngestConf(_Section):
    source: str | None = None  # a folder in class-per-subfolder layout
    manifest: str | None = None  # a CSV or Parquet file with a `uri` column
    split: str | None = None  # split for every sample when the source names none
    # the split names a sample may have, each with its aliases (matched case-insensitively; see brain.ingest)
    splits: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in SPLITS.items()})
    duplicate_uris: Literal["error", "first"] = "error"  # a manifest listing a uri twice: refuse, or keep the first
    workers: int | None = Field(None, ge=1)  # decode processes reading and hashing the files; None: one per core
    parallel_min: int = Field(1000, ge=1)  # from this many files on, `workers` processes share them


class ImagesConf(_Section):
    """Limits on every image read (ingest, embed, apply-model, patches): see brain.images."""

    max_bytes: int = Field(MAX_BYTES, ge=1)  # larger files are refused unread
    max_pixels: int = Field(MAX_PIXELS, ge=1)  # declared width × height above this: refused (decompression bomb)
    max_side: int = Field(MAX_SIDE, ge=16)  # larger images are reduced to this longer side while decoding
    timeout_s: float = Field(TIMEOUT_S, gt=0)  # one file's read + decode; a decoder past it is stopped

    def limits(self) -> DecodeLimits:
        return DecodeLimits(**self.model_dump())


class EmbedConf(_Section):
    brain_key: str = "embeddings"
    model: str | None = None  # None: the default model (see brain.models)
    batch_size: int = Field(256, ge=1)
    where: str | None = None  # SQL predicate over `samples` restricting what is embedded (the run's view)
    shard_size: int = Field(2048, ge=1)  # samples per shard: one Ray block, one staged file
    resume: bool = False  # reuse the shards an unfinished run with this brain key already staged

    @field_validator("where")
    @classmethod
    def _one_condition(cls, where: str | None) -> str | None:
        return None if where is None else check_condition(where, what="embed.where")


class ModelsConf(_Section):
    weights_dir: str | None = None  # searched before torch's cache; None: $BRAIN_WEIGHTS_DIR
    num_threads: int | None = None  # torch threads per model actor; None: torch's default
    input_size: int | None = None  # None: the model's own (224 for the zoo's classifiers)
    skip_requirements: bool = Field(False, description="build zoo models without first checking that their packages "
                                                       "import (FiftyOne's error_level)")


class ApplyModelConf(_Section):
    brain_key: str = "predictions"
    model: str | None = None  # a zoo name or a TorchScript/ONNX file (see `brain models list`)
    classes: list[str] | None = None  # class names of a TorchScript/ONNX classifier, in logit order
    store_logits: bool = True
    confidence_thresh: float | None = Field(None, ge=0, le=1, description=(
        "classifiers: a label less confident than this is stored as null (its logits are kept); detectors: keep "
        "detections at least this confident. None: every label, and detections of confidence >= 0.5"))
    batch_size: int = Field(64, ge=1)
    shard_size: int = Field(1024, ge=1)
    resume: bool = False


class PatchesConf(_Section):
    brain_key: str = "patch_embeddings"
    source: str = "predictions"  # brain key of a predictions run, or `attributes.FIELD` (boxes in samples.attributes)
    model: str | None = None
    min_confidence: float = Field(0.0, ge=0, le=1)
    batch_size: int = Field(256, ge=1)
    shard_size: int = Field(2048, ge=1)
    resume: bool = False


class NeighborsConf(_Section):
    brain_key: str = "knn"
    embeddings_key: str = "embeddings"
    k: int = Field(10, ge=1)
    metric: Literal["cosine", "l2"] = "cosine"
    index: Literal["auto", "flat", "ivf_flat", "ivf_pq"] = "auto"  # see brain.index.choose_spec
    flat_threshold: int = Field(50_000, ge=1)  # auto: exact flat index below this many vectors
    pq_threshold: int = Field(20_000_000, ge=1)  # auto: ivf_pq (compressed) from this many vectors
    nlist: int | None = Field(None, ge=1)  # None: 4·sqrt(N)
    nprobe: int = Field(8, ge=1)  # IVF lists scanned per query: where the recall tuning starts
    nprobe_max: int | None = Field(None, ge=1)  # the tuning's cap (None: nlist/4)
    k_factor_max: int = Field(64, ge=1)  # ivf_pq: cap on the re-rank depth (candidates = k_factor·k)
    target_recall: float = Field(0.95, ge=0, le=1)  # recall@k the IVF search is tuned to (0: no tuning)
    pq_refine_m: int | None = Field(None, ge=0)  # ivf_pq re-ranking code bytes (None: ≈ d/2; 0: no re-ranking)
    train_per_list: int = Field(40, ge=1, le=256)  # quantiser training sample: this many vectors per list
    index_shards: int = Field(2, ge=1)  # index shards, one Ray actor each, spread over the nodes
    query_block: int = Field(8192, ge=1)  # rows per query block sent to every shard
    recall_queries: int = Field(2000, ge=0)  # held-out samples checked against exact search (and as many to tune)
    # an incremental update (the scan) tunes from the previous nprobe and checks the graph on the same, fewer
    # rows: each exact query scans all N vectors, and 500 queries × k measure recall@10 ≈ 0.95 to about ±0.006
    update_recall_queries: int = Field(500, ge=0)


class UniquenessConf(_Section):
    brain_key: str = "uniqueness"
    neighbors_key: str = "knn"
    weights: list[float] = Field(default_factory=lambda: list(uniqueness_method.DEFAULT_WEIGHTS),
                                 description="weights of the nearest neighbors' distances (brain.methods.uniqueness)")

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: list[float]) -> list[float]:
        if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return weights


class LabelQualityConf(_Section):
    predictions_key: str = "predictions"
    neighbors_key: str | None = "knn"  # None: score from the logits alone
    hardness_key: str = "hardness"
    brain_key: str = "mistakenness"
    method: Literal["margin", "self_confidence", "fiftyone", "fiftyone_confidence"] = "margin"
    # detection mistakenness
    ground_truth: str = "attributes.detections"  # boxes per sample: a field of samples.attributes
    detection_key: str = "detection_mistakenness"
    iou_threshold: float = Field(0.5, gt=0, lt=1)
    missing_confidence: float = Field(0.95, ge=0, le=1)
    copy_missing: bool = False  # write ground truth + possibly missing objects to `detection_labels`


class WalkthroughConf(_Section):
    """The label-mistake walkthrough; its model's folds are the linear_probe section's."""

    dataset: str = "digits_noisy"
    noise_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0


class ScanConf(_Section):
    in_process_max: int = Field(2000, ge=0)  # at most this many new/changed samples: steps run in-process, no Ray/Spark
    in_process_rows: int = Field(2_000_000, ge=0, description=(
        "full recomputes whose data is at most this many rows (the dataset's samples) run in the scan's process "
        "(uniqueness, near duplicates by thresh or fraction): Spark's fixed costs dominate their few seconds "
        "of work"))
    # kNN graph: updated (IVF lists kept, only rows whose lists can change searched) while the new and changed
    # samples are at most this share of all; more, and the index is trained again on the new data
    knn_update_max_share: float = Field(0.5, ge=0, le=1)
    lock_stale_s: float = Field(120.0, gt=0)  # a scan lock whose heartbeat is older than this is taken over
    heartbeat_s: float = Field(10.0, gt=0)
    rerun: Literal["follow", "manual"] = Field("manual", description=(
        "recorded in each run's config: `follow` = `brain scan` makes the run again (with its recorded config) "
        "when its inputs change; `manual` = left as made (stale). The demo and the scan's own steps record follow"))


class RunsConf(_Section):
    """How runs share a lake: liveness, and how long replaced results stay readable."""

    heartbeat_s: float = Field(10.0, gt=0, description="seconds between a running job's heartbeats")
    abandon_after_s: float = Field(60.0, gt=0, description=(
        "a running run whose last heartbeat is older than this is marked abandoned by the next job on its key"))
    retention_hours: float = Field(24.0, ge=0, description=(
        "`brain lake vacuum` keeps rows of runs replaced less than this long ago, and their files as long again"))


class SubmitConf(_Section):
    """Where `brain submit` sends a job (the job itself then runs with the rest of this config)."""

    ray_address: str | None = None  # Ray Jobs API (dashboard) address, e.g. http://head:8265; None: $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS
    python: str = "python"  # the interpreter on the cluster that runs the entrypoint
    pip: list[str] = Field(default_factory=list)  # extra runtime-env packages (the image should have the rest)
    env_vars: dict[str, str] = Field(default_factory=dict)
    entrypoint_num_gpus: float = Field(0, ge=0)  # a GPU for the driver itself (the embedding actors ask for theirs)
    spark_submit: str | None = None  # spark-submit binary; None: on PATH, else pyspark's
    deploy_mode: Literal["client", "cluster"] = "client"  # cluster: driver in the cluster (Kubernetes, YARN)
    wait: bool = True  # follow the logs until the job ends


class RegisterEmbeddingsConf(_Section):
    brain_key: str = "embeddings"
    file: str | None = None  # .parquet (id + vector columns), .npz (sample_id, vector) or .npy (+ ids_file)
    ids_file: str | None = None  # for .npy: one sample id per line
    id_column: str = "sample_id"
    vector_column: str = "vector"
    samples_column: str | None = None  # a list<float> column of samples, or a field of samples.attributes


class RegisterPredictionsConf(_Section):
    brain_key: str = Field("predictions", description="brain key of the predictions run")
    file: str | None = Field(None, description=".parquet or .csv (one row per sample), or a .npy of logits [N, C] "
                                               "with ids_file")
    ids_file: str | None = Field(None, description="for .npy: one sample id (or uri) per line, in row order")
    classes: list[str] | None = Field(None, description="class names in logit order (or give classes_file)")
    classes_file: str | None = Field(None, description="a text file, one class name per line, in logit order")
    id_column: str = Field("sample_id", description="column of lake sample ids (or give uri_column's)")
    uri_column: str = Field("uri", description="column of image uris, used when the file has no id_column")


class LinearProbeConf(_Section):
    brain_key: str = Field("predictions", description="brain key of the predictions run it writes")
    embeddings_key: str = Field("embeddings", description="embeddings run it trains on (with samples.label)")
    folds: int = Field(5, ge=2, description="cross-validation folds: every sample is predicted out of fold")


class DuplicatesConf(_Section):
    brain_key: str = "duplicates"
    neighbors_key: str = "knn"
    method: Literal["near", "exact"] = "near"  # exact: equal content hashes
    grouping: Literal["greedy", "components"] = "greedy"  # greedy: FiftyOne's kept set (brain.methods.duplicates)
    thresh: float | None = Field(None, ge=0)  # embedding distance, no verification; None: verified candidates
    fraction: float | None = Field(None, gt=0, lt=1)  # or: the threshold making this fraction duplicates
    verify: bool = True  # candidates confirmed on pixels (brain.methods.near_duplicates)
    verifier: Literal["geometric", "aligned"] = "geometric"  # aligned: the previous shift/rescale correlation
    candidate_thresh: float = Field(0.5, ge=0)  # verify: embedding distance of the candidate pairs
    descriptor_thresh: float = Field(0.6, ge=0)  # geometric: blurred-thumbnail distance of the candidate pairs
    min_corr: float = Field(0.95, ge=-1, le=1)  # geometric: correlation after alignment of a duplicate
    min_ncc: float = Field(0.92, ge=-1, le=1)  # aligned: aligned correlation of a duplicate
    flips: bool = False  # geometric: horizontal mirror images count as duplicates
    verify_batch: int = Field(256, ge=1)  # candidate pairs per Arrow batch on the workers


class UniqueConf(_Section):
    brain_key: str = "unique"
    embeddings_key: str = "embeddings"
    n: int = Field(100, ge=1)
    metric: Literal["cosine", "l2"] = "cosine"


class LeaksConf(_Section):
    brain_key: str = "leaks"
    duplicates_key: str = "duplicates"
    thresh: float | None = Field(None, ge=0)  # only duplicates this close to their kept sample; None: all
    split_field: str = "split"  # a samples column or attributes.FIELD naming each sample's split
    splits: list[str] | dict[str, list[str]] | None = None  # names of split_field to compare, or {split: [ids]}


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
    strategy: str | None = Field(None, description=(
        "your density model by import path (my_pkg.density:MyDensity; its package folder in code_paths): "
        "fit/score, plus save(file) and a classmethod load(file), as it is stored without pickle. None: PCA + GMM"))
    strategy_params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the strategy")


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
    where: str | None = Field(None, description="SQL condition over samples: map only that subset "
                                                "(FiftyOne's use_view), e.g. \"split = 'test'\"")
    points: str | None = Field(None, description="precomputed 2-D/3-D coordinates to register instead of computing "
                                                 "a map: .parquet (sample_id, points: list of 2|3 floats) or .npy "
                                                 "[N, 2|3] with points_ids (FiftyOne's points=)")
    points_ids: str | None = Field(None, description="for a .npy points file: one sample id per line, in row order")


class StorageConf(_Section):
    """How to reach a lake on object storage (``lake: s3://bucket/prefix``); see cluster/README.md."""

    options: dict[str, str | bool | int] = Field(default_factory=dict, description=(
        "delta-rs storage options, also used for pyarrow's filesystem: AWS_ENDPOINT_URL, AWS_REGION, "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP (true for an http:// endpoint)... Empty: the "
        "same-named environment variables. Credentials are never recorded in a run's config (redacted)"))

    @field_validator("options")
    @classmethod
    def _upper_case_names(cls, options: dict[str, str | bool | int]) -> dict[str, str]:
        # YAML and --set read `true` as a boolean; delta-rs wants the string "true"
        return {name.upper(): str(value).lower() if isinstance(value, bool) else str(value)
                for name, value in options.items()}


class Conf(_Section):
    lake: str = "lake"  # a relative folder is taken from the working directory; or s3://bucket/prefix
    storage: StorageConf = Field(default_factory=StorageConf)
    dataset: str = "default"
    code_paths: list[str] = Field(default_factory=list, description=(
        "package folders of your own code named by import path (embed.model=my_pkg.models:MyNet, "
        "familiarity.strategy=my_pkg.density:MyDensity: give my_pkg/): put on the driver's sys.path, shipped to "
        "the Ray workers when the job starts or joins Ray (runtime_env py_modules) and to Spark (addPyFile)"))
    ray: RayConf = Field(default_factory=RayConf)
    spark: SparkConf = Field(default_factory=SparkConf)
    ingest: IngestConf = Field(default_factory=IngestConf)
    images: ImagesConf = Field(default_factory=ImagesConf)
    embed: EmbedConf = Field(default_factory=EmbedConf)
    neighbors: NeighborsConf = Field(default_factory=NeighborsConf)
    uniqueness: UniquenessConf = Field(default_factory=UniquenessConf)
    label_quality: LabelQualityConf = Field(default_factory=LabelQualityConf)
    walkthrough: WalkthroughConf = Field(default_factory=WalkthroughConf)
    scan: ScanConf = Field(default_factory=ScanConf)
    runs: RunsConf = Field(default_factory=RunsConf)
    submit: SubmitConf = Field(default_factory=SubmitConf)
    models: ModelsConf = Field(default_factory=ModelsConf)
    apply_model: ApplyModelConf = Field(default_factory=ApplyModelConf)
    patches: PatchesConf = Field(default_factory=PatchesConf)
    register_embeddings: RegisterEmbeddingsConf = Field(default_factory=RegisterEmbeddingsConf)
    register_predictions: RegisterPredictionsConf = Field(default_factory=RegisterPredictionsConf)
    linear_probe: LinearProbeConf = Field(default_factory=LinearProbeConf)
    duplicates: DuplicatesConf = Field(default_factory=DuplicatesConf)
    unique: UniqueConf = Field(default_factory=UniqueConf)
    leaks: LeaksConf = Field(default_factory=LeaksConf)
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
