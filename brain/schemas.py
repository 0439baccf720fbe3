"""Every lake table's schema, in one place.

A lake is a folder (or object-store URI) holding one Delta table per kind of
result. Results of several runs live side by side in one table, keyed by
``run_id`` (and ``brain_key`` where people filter by it), so SQL over them stays
simple: ``SELECT * FROM uniqueness WHERE brain_key = 'uniqueness'``.

Engines (Ray Data, Spark) write Parquet files whose columns match these schemas
exactly; :meth:`brain.lake.Lake.commit_files` checks that before the files are
committed to the Delta log.
"""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

# Patch runs (kNN and what builds on it, over a `patch_embeddings` run) key their rows by (sample_id,
# patch_index) and carry the box's label and bbox; whole-image runs leave these columns null. Where a
# column names other rows (neighbor_ids, group_id), a patch is named by its patch id "SAMPLE_ID#INDEX"
# (brain.vectors.patch_ids). Writers of whole-image rows may leave the columns out (filled with nulls).
PATCH_INDEX = ("patch_index", pa.int32())  # position of the box in its sample's detections list
PATCH_LABEL = ("patch_label", pa.string())  # the box's label
PATCH_BBOX = ("patch_bbox", pa.list_(pa.float32()))  # the box, [x, y, w, h] relative, as in DETECTION
PATCH_COLUMNS = frozenset({"patch_index", "kept_patch_index", "patch_label", "patch_bbox"})

SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),  # stable: hash of dataset + uri
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("content_hash", pa.string()),  # sha256 of the file's bytes
        ("size_bytes", pa.int64()),
        ("attributes", pa.string()),  # JSON of the manifest's other columns
        ("ingested_at", _TS),
    ]
)

EMBEDDINGS = pa.schema(
    [
        ("run_id", pa.string()),
        ("sample_id", pa.string()),
        ("vector", pa.list_(pa.float32())),
    ]
)

NEIGHBORS = pa.schema(
    [
        ("run_id", pa.string()),
        ("sample_id", pa.string()),
        ("neighbor_ids", pa.list_(pa.string())),  # nearest first, self excluded; patch ids for patch runs
        ("distances", pa.list_(pa.float32())),
        PATCH_INDEX,
    ]
)

UNIQUENESS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("uniqueness", pa.float64()),
        PATCH_INDEX,
        PATCH_LABEL,
        PATCH_BBOX,
    ]
)

HARDNESS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("hardness", pa.float64()),
    ]
)

MISTAKENNESS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("given_label", pa.string()),
        ("suggested_label", pa.string()),
        ("mistakenness", pa.float64()),  # higher = more likely a wrong label
        ("is_issue", pa.bool_()),
    ]
)

DETECTION_MISTAKENNESS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("mistakenness", pa.float64()),  # max over the sample's matched objects; -1 when none matched
        ("mistakenness_loc", pa.float64()),
        ("num_missing", pa.int64()),  # confident predictions no ground truth matched
        ("num_spurious", pa.int64()),  # ground-truth objects no prediction matched
    ]
)

DETECTION_OBJECTS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("source", pa.string()),  # ground_truth | prediction
        ("object_index", pa.int32()),  # position in the sample's list of that source
        ("label", pa.string()),
        ("bbox", pa.list_(pa.float32())),
        ("confidence", pa.float32()),
        ("mistakenness", pa.float64()),  # ground truth: class mistakenness of its match (-1 unmatched)
        ("mistakenness_loc", pa.float64()),
        ("iou", pa.float64()),
        ("possible_missing", pa.bool_()),  # predictions only
        ("possible_spurious", pa.bool_()),  # ground truth only
    ]
)

LABEL_QUALITY_CLASSES = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("label", pa.string()),
        ("samples", pa.int64()),
        ("issues", pa.int64()),
        ("mean_mistakenness", pa.float64()),
    ]
)

LABEL_CONFUSION = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("given_label", pa.string()),
        ("suggested_label", pa.string()),
        ("samples", pa.int64()),
    ]
)

INGEST_ERRORS = pa.schema(
    [
        ("run_id", pa.string()),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("stage", pa.string()),  # ingest | decode
        ("reason", pa.string()),
        ("recorded_at", _TS),
    ]
)

# The run catalog is an append-only log of events (Delta blind appends never conflict); the
# `runs` view resolves it to one row per run (brain.runs.resolve). Event rows fill the columns
# their event carries: `started` the run record, `succeeded` rows_written/metrics, `failed` and
# `abandoned` the error, `renamed` the new brain_key; the rest are null.
RUN_EVENTS = pa.schema(
    [
        ("event", pa.string()),  # started | succeeded | failed | abandoned | renamed | deleted | purged
        ("at", _TS),  # when the event was written (orders a run's events and a key's successes)
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("method", pa.string()),
        ("dataset", pa.string()),
        ("input_key", pa.string()),  # brain_key of the run this one consumed
        ("input_run_ids", pa.map_(pa.string(), pa.string())),  # role -> run id of every input run
        ("samples_version", pa.int64()),  # Delta version of `samples` it read
        ("config", pa.string()),  # the job's config sections as JSON, credentials redacted
        ("error", pa.string()),
        ("rows_written", pa.map_(pa.string(), pa.int64())),
        ("metrics", pa.map_(pa.string(), pa.float64())),  # e.g. recall@k of an approximate index
        ("warnings", pa.list_(pa.string())),
        ("package_version", pa.string()),
        ("git_sha", pa.string()),
        ("engine_versions", pa.map_(pa.string(), pa.string())),
        ("executed_on", pa.string()),  # "<engine> [details] host=<host>"
        ("submission_id", pa.string()),  # cluster job id (LAKEBRAIN_SUBMISSION_ID set by `brain submit`)
        ("sample_filter", pa.string()),  # SQL predicate over `samples`: the view the run was computed on
        ("host", pa.string()),
        ("pid", pa.int64()),
    ]
)

# The `runs` view: one row per run, resolved from `run_events` as of one catalog snapshot.
RUNS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("method", pa.string()),
        ("dataset", pa.string()),
        ("status", pa.string()),  # running | succeeded | superseded | failed | abandoned | deleted
        ("current", pa.bool_()),  # the key's current run: its rows are what the table views show
        ("stale", pa.bool_()),  # an input run is no longer its key's current run, or is stale itself (runs.stale_runs)
        ("input_key", pa.string()),
        ("input_run_ids", pa.map_(pa.string(), pa.string())),
        ("samples_version", pa.int64()),
        ("config", pa.string()),
        ("error", pa.string()),
        ("started_at", _TS),
        ("finished_at", _TS),  # when it succeeded, failed or was abandoned
        ("superseded_at", _TS),  # when a newer run of its key succeeded (or it was deleted)
        ("purged_at", _TS),  # when `brain lake vacuum` or `brain runs delete` removed its rows
        ("rows_written", pa.map_(pa.string(), pa.int64())),
        ("metrics", pa.map_(pa.string(), pa.float64())),
        ("warnings", pa.list_(pa.string())),
        ("package_version", pa.string()),
        ("git_sha", pa.string()),
        ("engine_versions", pa.map_(pa.string(), pa.string())),
        ("executed_on", pa.string()),
        ("submission_id", pa.string()),
        ("sample_filter", pa.string()),
        ("host", pa.string()),
        ("pid", pa.int64()),
    ]
)

DETECTION = pa.struct(
    [
        ("label", pa.string()),
        ("bbox", pa.list_(pa.float32())),  # [x, y, w, h] relative to the image's width/height, in [0, 1]
        ("confidence", pa.float32()),
    ]
)

PREDICTIONS = pa.schema(
    [
        ("run_id", pa.string()),
        ("sample_id", pa.string()),
        ("label", pa.string()),  # classifier: argmax class; detector: most confident detection (null: none)
        ("confidence", pa.float32()),  # max softmax probability / that detection's score
        ("logits", pa.list_(pa.float32())),  # classifiers with store_logits; class order in the run's classes.json
        ("detections", pa.list_(DETECTION)),  # detectors: those with confidence >= confidence_thresh
    ]
)

DETECTION_LABELS = pa.schema(
    [
        ("run_id", pa.string()),
        ("sample_id", pa.string()),
        # a new labels version: the ground truth plus the possibly missing objects (copy_missing)
        ("detections", pa.list_(DETECTION)),
    ]
)

PATCH_EMBEDDINGS = pa.schema(
    [
        ("run_id", pa.string()),
        ("sample_id", pa.string()),
        ("patch_index", pa.int32()),  # position of the box in the sample's detections list
        ("label", pa.string()),
        ("bbox", pa.list_(pa.float32())),  # [x, y, w, h] relative, as in DETECTION
        ("vector", pa.list_(pa.float32())),
    ]
)

DUPLICATES = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("method", pa.string()),  # near (embedding graph, verified on pixels) | exact (content hash)
        ("group_id", pa.string()),  # = kept_sample_id: the group's lowest sample id (patch id for patches)
        ("kept_sample_id", pa.string()),
        ("sample_id", pa.string()),  # a duplicate of the kept sample
        ("distance", pa.float64()),  # to its nearest group member (0 for exact)
        ("kept_patch_index", pa.int32()),
        PATCH_INDEX,
        PATCH_LABEL,
        PATCH_BBOX,
    ]
)

UNIQUE = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("rank", pa.int32()),  # pick order of the k-center greedy selection, from 0
    ]
)

LEAKS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("group_id", pa.string()),
        ("kept_sample_id", pa.string()),
        ("kept_split", pa.string()),
        ("sample_id", pa.string()),  # a duplicate in another split than its kept sample
        ("split", pa.string()),
        ("distance", pa.float64()),
        ("kept_patch_index", pa.int32()),
        PATCH_INDEX,
    ]
)

FAMILIARITY = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("score", pa.float64()),  # negative log-likelihood under the run's model: higher = less familiar
        ("percentile", pa.float64()),  # % of the model's fit samples with a score <= this one
    ]
)

FAMILIARITY_EXTREMES = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("label", pa.string()),  # null: samples without a label
        ("which_end", pa.string()),  # most | least (familiar)
        ("rank", pa.int32()),  # 0 = the most familiar ("most") or the least familiar ("least")
        ("sample_id", pa.string()),
        ("score", pa.float64()),
    ]
)

FAMILIARITY_COMPARISON = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("label", pa.string()),  # null: the overall ratio
        ("ratio", pa.float64()),  # L(fit -> predict), in [0, 2]
        ("verdict", pa.string()),  # huge gap | small gap | fine | gap
    ]
)

VISUALIZATION = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("z", pa.float64()),  # null for 2-D maps
        PATCH_INDEX,
        PATCH_LABEL,
        PATCH_BBOX,
    ]
)

SIMILARITY_VIEWS = pa.schema(
    [
        ("run_id", pa.string()),
        ("brain_key", pa.string()),
        ("sample_id", pa.string()),
        ("rank", pa.int32()),  # 0 = the nearest (the farthest for a reverse query)
        ("distance", pa.float64()),  # to the query, in the kNN run's metric
        PATCH_INDEX,
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "embeddings": EMBEDDINGS,
    "neighbors": NEIGHBORS,
    "uniqueness": UNIQUENESS,
    "ingest_errors": INGEST_ERRORS,
    "predictions": PREDICTIONS,
    "hardness": HARDNESS,
    "mistakenness": MISTAKENNESS,
    "detection_mistakenness": DETECTION_MISTAKENNESS,
    "detection_objects": DETECTION_OBJECTS,
    "detection_labels": DETECTION_LABELS,
    "label_quality_classes": LABEL_QUALITY_CLASSES,
    "label_confusion": LABEL_CONFUSION,
    "patch_embeddings": PATCH_EMBEDDINGS,
    "run_events": RUN_EVENTS,
    "duplicates": DUPLICATES,
    "unique": UNIQUE,
    "leaks": LEAKS,
    "familiarity": FAMILIARITY,
    "familiarity_extremes": FAMILIARITY_EXTREMES,
    "familiarity_comparison": FAMILIARITY_COMPARISON,
    "visualization": VISUALIZATION,
    "similarity_views": SIMILARITY_VIEWS,
}

# Tables whose rows belong to one run: SQL shows the current runs' rows; vacuum removes the others'.
RUN_RESULT_TABLES = [name for name, schema in TABLES.items() if "run_id" in schema.names and name != "run_events"]

# Views derived from the tables (not stored): the run catalog.
VIEWS: dict[str, pa.Schema] = {"runs": RUNS}


def fields_of(table: str, *names: str) -> list[pa.Field]:
    """Fields of lake table ``table`` by name: the columns of an engine's intermediate frames are typed
    like the lake's (``pyspark.sql.pandas.types.from_arrow_schema`` turns them into Spark's)."""
    schema = schema_of(table)
    missing = [name for name in names if name not in schema.names]
    if missing:
        raise ValueError(f"lake table {table!r} has no column(s) {missing}; its columns: {schema.names}")
    return [schema.field(name) for name in names]


def schema_of(table: str) -> pa.Schema:
    """The schema of lake table ``table``; a clear error for an unknown name."""
    try:
        return TABLES[table]
    except KeyError:
        raise ValueError(f"unknown lake table {table!r}; known tables: {sorted(TABLES)}") from None
