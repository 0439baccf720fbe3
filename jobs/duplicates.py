"""Duplicates job on Spark: near-duplicates over a kNN run, or exact duplicates by content hash.

near, default (math in brain.methods.duplicates and brain.methods.near_duplicates):
    candidates = neighbors (this run) with embedding distance ≤ candidate_thresh
               ∪ kNN of the blurred-thumbnail descriptor (computed on the workers from the images,
                 FAISS on the driver) with distance ≤ descriptor_thresh; each pair once (a < b)
      → pairs whose two files (content hashes) the key's current run already verified with the same
        settings take its verdict (its artifact verdicts.parquet): a scan that adds 1% of the
        images verifies only the pairs with a new or changed file
      → verification of the others on the workers (mapInArrow, batches of verify_batch pairs sorted by
        their first image, each image decoded once per batch): similarity transform + correlation ≥
        min_corr (verifier=geometric) or the aligned correlation ≥ min_ncc (verifier=aligned)
      → every verdict collected to the driver and saved as this run's verdicts.parquet;
        the passed pairs, distance 1 − correlation
      → grouping (greedy kept set, or components) in sample-id order at 1 − min_corr
      → one row per duplicate: kept_sample_id, distance to the kept sample (greedy)
near with thresh or fraction (no verification): the neighbors' edges ≤ thresh, grouped the same way.
    ``run(conf, in_process=True)`` makes the same rows in this process without Spark (what a scan
    does for datasets of at most ``scan.in_process_rows`` samples): the kNN run read batch by batch,
    each batch's lists flattened and only its edges ≤ thresh (fraction: ≤ the quantile cap below)
    to a sample of the dataset kept, each pair once at its least distance, the same grouping.
near over patches (a kNN run of a patch embeddings run, FiftyOne's duplicate objects): the same
    edges between boxes, named by patch id; ``thresh`` or ``fraction`` is required (pixel
    verification compares whole images); rows keyed by (sample_id, patch_index), the kept box by
    (kept_sample_id, kept_patch_index), group_id = the kept box's patch id, with the box's label and bbox.
exact:
    samples (this dataset) grouped by content_hash → groups of two or more, kept = lowest sample id

The run's metrics: candidates (pairs), verified (pairs verified by this run), reused (verdicts
taken from the previous run), passed, groups, thresh. With ``fraction`` the
threshold comes from the minimum spanning forest of the graph's short edges, on the
driver: edges longer than the (2·fraction)-quantile of nearest-neighbour distances
cannot matter (each sample's nearest edge is in the forest, so ⌈f·N⌉ forest edges
lie below that quantile) and are not collected.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from brain import images, runs
from brain.config import Conf, DuplicatesConf, ImagesConf
from brain.lake import Lake, plain_strings
from brain.methods import duplicates as dup
from brain.methods import near_duplicates
from brain.schemas import fields_of
from brain.vectors import (
    PATCH_ID_SEPARATOR,
    PATCH_TABLE,
    indexed_patches,
    item_ids,
    patch_boxes,
    patch_ids,
    split_patch_ids,
)
from jobs.registry import Job

log = logging.getLogger("jobs.duplicates")

# Null in whole-image (exact) rows: Spark's Parquet files hold every column of the table.
DUPLICATE_PATCH_COLUMNS = ("kept_patch_index", "patch_index", "patch_label", "patch_bbox")

# A verified pair: sample ids a < b, the leading HASH_CHARS of their files' content hashes (which
# key the verdict: it depends on the pixels only), distance 1 − correlation, and the verdict.
HASH_CHARS = 16
PAIRS = pa.schema([fields_of("duplicates", "sample_id")[0].with_name(end) for end in ("a", "b")]
                  + [pa.field(f"hash_{end}", pa.string()) for end in ("a", "b")]
                  + fields_of("duplicates", "distance") + [pa.field("passed", pa.bool_())])
VERDICTS = pa.schema([PAIRS.field(name) for name in ("hash_a", "hash_b", "distance", "passed")])
VERDICTS_ARTIFACT = "verdicts.parquet"
# A kNN edge as listed (src's list holds dst), before each pair is taken once: ids, distance as a double.
DIRECTED_EDGES = pa.schema([pa.field("src", pa.string()), pa.field("dst", pa.string()),
                            pa.field("distance", pa.float64())])


def verdict_settings(cfg: DuplicatesConf) -> bytes:
    """What a verdict depends on besides the two files: the verifier and its thresholds."""
    return json.dumps({"verifier": cfg.verifier, "min_corr": cfg.min_corr, "min_ncc": cfg.min_ncc,
                       "flips": cfg.flips, "ecc_from_ncc": near_duplicates.ECC_FROM_NCC}, sort_keys=True).encode()


def earlier_verdicts(lake: Lake, cfg: DuplicatesConf) -> pa.Table | None:
    """The verdicts (VERDICTS) saved by the key's current run, if it verified with these settings."""
    try:
        previous = runs.latest_succeeded(lake, cfg.brain_key)
        data = lake.read_artifact(previous["run_id"], VERDICTS_ARTIFACT)
    except (runs.RunNotFoundError, FileNotFoundError):
        return None
    table = pq.read_table(pa.BufferReader(data))
    return table if (table.schema.metadata or {}).get(b"settings") == verdict_settings(cfg) else None


def save_verdicts(run: runs.Run, verdicts: pa.Table, cfg: DuplicatesConf) -> None:
    """This run's verdicts (both hashes known) as its artifact, for the next run of the key: one row per pair
    of contents (copies of one file make several candidate pairs with the same verdict)."""
    known = verdicts.filter(pc.and_(pc.is_valid(verdicts["hash_a"]), pc.is_valid(verdicts["hash_b"])))
    known = known.group_by(["hash_a", "hash_b"], use_threads=False).aggregate([("distance", "min"),
                                                                              ("passed", "max")])
    table = pa.table([known["hash_a"], known["hash_b"], known["distance_min"], known["passed_max"]],
                     schema=VERDICTS).replace_schema_metadata({"settings": verdict_settings(cfg)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    run.write_artifact(VERDICTS_ARTIFACT, sink.getvalue().to_pybytes())


def _load_or_none(uri: str, limits: images.DecodeLimits):
    """The decoded image, or None for a file that went bad after ingest (it then matches nothing)."""
    try:
        return images.load(uri, limits=limits)
    except images.ImageError as err:
        log.warning("duplicates: %s", err)
        return None


def descriptor_batches(batches: Iterator[pa.RecordBatch], flips: bool,
                       limits: images.DecodeLimits) -> Iterator[pa.RecordBatch]:
    """(sample_id, uri) → (sample_id, descriptor[, mirrored]): the blurred thumbnails of the decoded images."""
    for batch in batches:
        cols = batch.to_pydict()
        decoded = [_load_or_none(uri, limits) for uri in cols["uri"]]
        readable = [i for i, img in enumerate(decoded) if img is not None]
        cols["sample_id"] = [cols["sample_id"][i] for i in readable]
        decoded = [decoded[i] for i in readable]
        out = {"sample_id": pa.array(cols["sample_id"], pa.string()),
               "descriptor": pa.array(list(near_duplicates.blurred_thumbnails(decoded)), pa.list_(pa.float32()))}
        if flips:
            out["mirrored"] = pa.array(list(near_duplicates.blurred_thumbnails([img[:, ::-1] for img in decoded])),
                                       pa.list_(pa.float32()))
        yield pa.RecordBatch.from_pydict(out)


def verified_batches(batches: Iterator[pa.RecordBatch], cfg: DuplicatesConf,
                     limits: images.DecodeLimits) -> Iterator[pa.RecordBatch]:
    """(a, b, hash_a, hash_b, uri_a, uri_b) → PAIRS (distance = 1 − correlation), every candidate pair."""
    verifier = near_duplicates.Verifier(min_corr=cfg.min_corr, flips=cfg.flips) if cfg.verifier == "geometric" else None
    for batch in batches:
        cols = batch.to_pydict()
        loaded: dict[str, object] = {}

        def image(uri: str):
            if uri not in loaded:
                img = _load_or_none(uri, limits)
                loaded[uri] = verifier.prepare(img, f"image {uri}") if verifier is not None and img is not None else img
            return loaded[uri]

        corr, passed = [], []
        for ua, ub in zip(cols["uri_a"], cols["uri_b"]):
            if image(ua) is None or image(ub) is None:
                corr.append(0.0)
                passed.append(False)
            elif verifier is not None:
                match = verifier.match(image(ua), image(ub))
                corr.append(match.ncc)
                passed.append(match.passed)
            else:
                corr.append(dup.aligned_similarity(image(ua), image(ub)))
                passed.append(corr[-1] >= cfg.min_ncc)
        yield pa.RecordBatch.from_pydict({
            "a": pa.array(cols["a"], pa.string()), "b": pa.array(cols["b"], pa.string()),
            "hash_a": pa.array(cols["hash_a"], pa.string()), "hash_b": pa.array(cols["hash_b"], pa.string()),
            "distance": pa.array(np.maximum(1.0 - np.asarray(corr, np.float64), 0.0)),
            "passed": pa.array(passed, pa.bool_())})


def descriptor_candidates(spark, samples, cfg: DuplicatesConf, images_conf: ImagesConf):
    """Candidate pairs (a < b) of the blurred-thumbnail kNN graph as a Spark frame (a, b)."""
    schema = "sample_id string, descriptor array<float>" + (", mirrored array<float>" if cfg.flips else "")
    flips, limits = cfg.flips, images_conf.limits()
    table = samples.mapInArrow(lambda it: descriptor_batches(it, flips, limits), schema).toArrow().sort_by("sample_id")
    if table.num_rows < 2:
        return spark.createDataFrame([], "a string, b string")
    ids = table["sample_id"].to_numpy(zero_copy_only=False)
    vectors = np.stack(table["descriptor"].to_numpy(zero_copy_only=False)).astype(np.float32)
    mirrored = np.stack(table["mirrored"].to_numpy(zero_copy_only=False)).astype(np.float32) if flips else None
    src, dst, _ = dup.descriptor_pairs(vectors, cfg.descriptor_thresh, mirrored=mirrored)
    pairs = pa.table({"a": pa.array(ids[src], pa.string()), "b": pa.array(ids[dst], pa.string())})
    return spark.createDataFrame(pairs)


def group_rows(edges: pa.Table, thresh: float, grouping: str) -> pa.Table:
    """(a, b, distance) edges → (group_id, kept_sample_id, sample_id, distance), kept in sample-id order."""
    ends = pa.chunked_array([chunk.cast(pa.string()) for name in ("a", "b") for chunk in edges[name].chunks],
                            pa.string())
    ids = pc.unique(ends)
    ids = ids.take(pc.sort_indices(ids))  # UTF-8 byte order: the code point order of the ids
    index = pc.index_in(ends, ids).to_numpy()
    m = edges.num_rows
    kept, duplicate, distance = dup.group_duplicates(len(ids), index[:m], index[m:], edges["distance"].to_numpy(),
                                                     thresh, grouping=grouping)
    return pa.table({"group_id": ids.take(kept), "kept_sample_id": ids.take(kept),
                     "sample_id": ids.take(duplicate), "distance": pa.array(distance, pa.float64())})


def near_rows(spark, lake: Lake, conf: Conf, neighbors_run_id: str, run: runs.Run, *,
              patches: bool = False) -> pa.Table:
    """(group_id, kept_sample_id, sample_id, distance) of the near duplicates; with ``patches`` the ids are
    patch ids (the kNN run indexed boxes). Verified runs save their verdicts as ``run``'s artifact."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from jobs.spark_lake import read_table

    cfg, metrics = conf.duplicates, run.metrics
    samples = read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset).select(
        "sample_id", "uri", F.substring("content_hash", 1, HASH_CHARS).alias("hash"))
    nbr = read_table(spark, lake, "neighbors").where(F.col("run_id") == neighbors_run_id).join(
        samples.select("sample_id"), "sample_id")
    src = F.concat_ws(PATCH_ID_SEPARATOR, "sample_id", F.col("patch_index").cast("string")) if patches else F.col(
        "sample_id")
    pairs = nbr.select(src.alias("src"),
                       F.explode(F.arrays_zip("neighbor_ids", "distances")).alias("e")).select(
        "src", F.col("e.neighbor_ids").alias("dst"), F.col("e.distances").cast("double").alias("distance"))
    dst_sample = F.regexp_extract("dst", f"^(.*){PATCH_ID_SEPARATOR}[0-9]+$", 1) if patches else F.col("dst")
    pairs = pairs.join(samples.select(F.col("sample_id").alias("dst_sample")), dst_sample == F.col("dst_sample"),
                       "left_semi")
    thresh, verify = dup.resolve_threshold(thresh=cfg.thresh, fraction=cfg.fraction, verify=cfg.verify)
    if patches and verify:
        raise ValueError("duplicates over patches compare their embeddings only (pixel verification compares "
                         "whole images): give duplicates.thresh (an embedding distance) or duplicates.fraction")
    if cfg.fraction is not None:
        thresh = fraction_threshold(nbr, pairs, cfg.fraction)
    edge_thresh = cfg.candidate_thresh if verify else thresh
    edges = (pairs.where(F.col("distance") <= edge_thresh)
             .groupBy(F.least("src", "dst").alias("a"), F.greatest("src", "dst").alias("b"))
             .agg(F.min("distance").alias("distance")))
    if verify:
        candidates = edges.select("a", "b")
        if cfg.verifier == "geometric":
            candidates = candidates.union(descriptor_candidates(spark, samples, cfg, conf.images)).distinct()
        ends = {end: samples.select(F.col("sample_id").alias(end), F.col("uri").alias(f"uri_{end}"),
                                    F.col("hash").alias(f"hash_{end}")) for end in ("a", "b")}
        to_verify = candidates.join(ends["a"], "a").join(ends["b"], "b").localCheckpoint()
        metrics["candidates"] = float(to_verify.count())
        known = earlier_verdicts(lake, cfg)
        reused = None
        if known is not None and known.num_rows:
            known = spark.createDataFrame(known)
            reused = to_verify.join(known, ["hash_a", "hash_b"]).select(*PAIRS.names)
            to_verify = to_verify.join(known.select("hash_a", "hash_b"), ["hash_a", "hash_b"],
                                       "left_anti").localCheckpoint()
        count = to_verify.count()
        parts, limits = max(1, -(-count // cfg.verify_batch)), conf.images.limits()
        verdicts = (to_verify.repartition(parts, "a").sortWithinPartitions("a")
                    .mapInArrow(lambda it: verified_batches(it, cfg, limits), from_arrow_schema(PAIRS)))
        verdicts = verdicts.unionByName(reused) if reused is not None else verdicts
        verdicts = verdicts.toArrow()
        metrics["verified"], metrics["reused"] = float(count), metrics["candidates"] - count
        save_verdicts(run, verdicts, cfg)
        passed = verdicts.filter(verdicts["passed"])
        metrics["passed"] = float(passed.num_rows)
        metrics["thresh"] = 1.0 - (cfg.min_corr if cfg.verifier == "geometric" else cfg.min_ncc)
        return group_rows(passed.select(["a", "b", "distance"]), metrics["thresh"], cfg.grouping)
    return threshold_rows(edges.select("a", "b", "distance").toArrow(), thresh, cfg.grouping, metrics)


def threshold_rows(edges: pa.Table, thresh: float, grouping: str, metrics: dict[str, float]) -> pa.Table:
    """Unverified (a, b, distance) edges (a < b, distance ≤ thresh) grouped at ``thresh``, with the run's metrics."""
    metrics["pairs"] = float(edges.num_rows)
    metrics["thresh"] = float(thresh)
    return group_rows(edges, thresh, grouping)


def cap_quantile(fraction: float) -> float:
    """The quantile of first-neighbour distances above which no edge can matter for ``fraction`` (module
    docstring; 0.01 of slack for Spark's approximate percentile)."""
    return min(1.0, 2 * fraction + 0.01)


def short_edge_threshold(n: int, src: pa.ChunkedArray, dst: pa.ChunkedArray, distance: pa.ChunkedArray,
                         fraction: float) -> float:
    """The spanning-forest threshold for ``fraction`` over ``n`` samples from the directed short edges (ids)."""
    names, index = np.unique(np.concatenate([src.to_numpy(zero_copy_only=False),
                                             dst.to_numpy(zero_copy_only=False)]), return_inverse=True)
    # samples with no short edge are singletons: they only add to n
    return dup.threshold_for_fraction(max(n, len(names)), index[:len(src)], index[len(src):], distance.to_numpy(),
                                      fraction)


def canonical_edges(directed: pa.Table) -> pa.Table:
    """Directed (src, dst, distance) edges → (a, b, distance): each pair once, a < b, at its least distance
    (what the Spark path's groupBy(least, greatest) makes; both order strings by their UTF-8 bytes)."""
    forward = pc.less_equal(directed["src"], directed["dst"])
    pairs = pa.table({"a": pc.if_else(forward, directed["src"], directed["dst"]),
                      "b": pc.if_else(forward, directed["dst"], directed["src"]), "distance": directed["distance"]})
    least = pairs.group_by(["a", "b"], use_threads=False).aggregate([("distance", "min")])
    return pa.table({"a": least["a"], "b": least["b"], "distance": least["distance_min"]})


def neighbor_batches(lake: Lake, neighbors_run_id: str, columns: list[str], *,
                     batch_rows: int) -> Iterator[pa.Table]:
    """The kNN run's rows, at most ``batch_rows`` at a time: the driver never holds the run's neighbour lists
    at once (10M id strings at 1M samples)."""
    scan = lake.dataset("neighbors").to_batches(columns=columns, filter=pc.field("run_id") == neighbors_run_id,
                                                batch_size=batch_rows)
    for batch in scan:
        yield plain_strings(pa.Table.from_batches([batch]))


def short_edges(rows: pa.Table, cap: float, *, patches: bool) -> pa.Table:
    """kNN rows → their directed edges (src, dst, distance) with distance ≤ ``cap``; with ``patches`` src
    and dst are patch ids."""
    lengths = pc.list_value_length(rows["neighbor_ids"]).fill_null(0)
    mismatched = pc.not_equal(lengths, pc.list_value_length(rows["distances"]).fill_null(0))
    if pc.any(mismatched).as_py():
        bad = rows["sample_id"].filter(mismatched)[0].as_py()
        raise ValueError(f"neighbors row of sample {bad!r}: neighbor_ids and distances differ in length")
    distance = pc.cast(pc.list_flatten(rows["distances"]), pa.float64())
    short = pc.less_equal(distance, cap)
    src_ids = patch_ids(rows["sample_id"], rows["patch_index"]) if patches else rows["sample_id"]
    row_of_edge = np.repeat(np.arange(rows.num_rows), lengths.to_numpy())
    return pa.table([pc.take(src_ids, row_of_edge[short.to_numpy(zero_copy_only=False)]),
                     pc.cast(pc.list_flatten(rows["neighbor_ids"]).filter(short), pa.string()),
                     distance.filter(short)], schema=DIRECTED_EDGES)


def within_dataset(edges: pa.Table, samples: pa.Array, *, patches: bool) -> pa.Table:
    """The edges both of whose ends are ``samples`` (the Spark path's join and semi-join)."""
    for end in ("src", "dst"):
        edges = edges.filter(pc.is_in(split_patch_ids(edges[end])[0] if patches else edges[end], samples))
    return edges


def near_rows_in_process(lake: Lake, conf: Conf, neighbors_run_id: str, metrics: dict[str, float], *,
                         patches: bool = False, batch_rows: int = 100_000) -> pa.Table:
    """``near_rows`` without pixel verification, over Arrow batches of ``batch_rows`` kNN rows in this process
    (no Spark): the same rows."""
    cfg = conf.duplicates
    check_in_process(cfg)
    thresh, _ = dup.resolve_threshold(thresh=cfg.thresh, fraction=cfg.fraction, verify=cfg.verify)
    samples = plain_strings(lake.read("samples", columns=["sample_id"],
                                      filter=pc.field("dataset") == conf.dataset))["sample_id"].combine_chunks()
    cap = thresh
    if cfg.fraction is not None:
        firsts = pa.concat_tables([pa.table({"sample_id": rows["sample_id"], "first": pc.list_element(
            pc.list_slice(rows["distances"], 0, 1), 0)}) for rows in neighbor_batches(
            lake, neighbors_run_id, ["sample_id", "distances"], batch_rows=batch_rows)]
            or [pa.table({"sample_id": pa.array([], pa.string()), "first": pa.array([], pa.float32())})])
        firsts = firsts.filter(pc.is_in(firsts["sample_id"], samples))
        first = firsts["first"].drop_null().to_numpy()
        if first.size == 0:
            raise ValueError(f"kNN run {neighbors_run_id} has no neighbours for dataset {conf.dataset!r}")
        cap = float(np.quantile(first, cap_quantile(cfg.fraction), method="inverted_cdf"))
    columns = ["sample_id", "neighbor_ids", "distances", *(["patch_index"] if patches else [])]
    directed = pa.concat_tables([DIRECTED_EDGES.empty_table(), *(
        short_edges(rows, cap, patches=patches)
        for rows in neighbor_batches(lake, neighbors_run_id, columns, batch_rows=batch_rows))])
    directed = within_dataset(directed, samples, patches=patches)
    if cfg.fraction is not None:
        thresh = short_edge_threshold(firsts.num_rows, directed["src"], directed["dst"], directed["distance"],
                                      cfg.fraction)
        directed = directed.filter(pc.less_equal(directed["distance"], thresh))
    return threshold_rows(canonical_edges(directed), thresh, cfg.grouping, metrics)


def patch_rows(lake: Lake, rows: pa.Table, patch_run: str) -> pa.Table:
    """Grouped patch-id rows → keyed by (sample_id, patch_index), the kept box's index, the box's label and bbox."""
    kept_ids, kept_index = split_patch_ids(rows["kept_sample_id"])
    sample_ids, patch_index = split_patch_ids(rows["sample_id"])
    boxes = patch_boxes(lake, patch_run)
    at = pc.index_in(rows["sample_id"], item_ids(boxes, PATCH_TABLE))
    return pa.table({"group_id": rows["group_id"], "kept_sample_id": kept_ids, "sample_id": sample_ids,
                     "distance": rows["distance"], "kept_patch_index": kept_index, "patch_index": patch_index,
                     "patch_label": boxes["patch_label"].take(at), "patch_bbox": boxes["patch_bbox"].take(at)})


def fraction_threshold(nbr, pairs, fraction: float) -> float:
    """The spanning-forest threshold for ``fraction`` (module docstring), from the short edges only."""
    from pyspark.sql import functions as F

    n = nbr.count()
    cap = nbr.select(F.percentile_approx(F.col("distances")[0], cap_quantile(fraction), 10_000)).first()[0]
    short = pairs.where(F.col("distance") <= float(cap)).toArrow()
    return short_edge_threshold(n, short["src"], short["dst"], short["distance"], fraction)


def exact_rows(spark, lake: Lake, conf: Conf):
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from jobs.spark_lake import read_table

    samples = read_table(spark, lake, "samples").where(F.col("dataset") == conf.dataset)
    missing = samples.where(F.col("content_hash").isNull() | (F.col("content_hash") == "")).select("sample_id").first()
    if missing is not None:
        raise ValueError(f"sample {missing[0]} has no content hash")
    kept = F.min("sample_id").over(Window.partitionBy("content_hash"))
    return (samples.select("sample_id", kept.alias("kept")).where(F.col("sample_id") != F.col("kept"))
            .select(F.lit("exact").alias("method"), F.col("kept").alias("group_id"),
                    F.col("kept").alias("kept_sample_id"), "sample_id", F.lit(0.0).alias("distance")))


def runs_in_process(cfg: DuplicatesConf) -> bool:
    """Whether the config's duplicates can run in-process: near duplicates by embedding distance alone."""
    return cfg.method == "near" and not dup.resolve_threshold(thresh=cfg.thresh, fraction=cfg.fraction,
                                                             verify=cfg.verify)[1]


def check_in_process(cfg: DuplicatesConf) -> None:
    if not runs_in_process(cfg):
        raise ValueError("in-process duplicates are near duplicates by embedding distance: set duplicates.method "
                         "near and duplicates.thresh or duplicates.fraction (exact duplicates and pixel "
                         "verification run on Spark)")


def run(conf: Conf, *, in_process: bool = False) -> str:
    """Duplicates on Spark, or, ``in_process``, near duplicates by ``thresh`` or ``fraction`` (no pixel
    verification) in this process without starting Spark: the same rows, without Spark's fixed costs."""
    from jobs.engines import spark_session, spark_where, versions

    lake = Lake.from_conf(conf)
    cfg = conf.duplicates
    if in_process:
        check_in_process(cfg)
    spark = None if in_process else spark_session(conf)
    started = time.perf_counter()
    inputs = {"neighbors": runs.latest_succeeded(lake, cfg.neighbors_key)["run_id"]} if cfg.method == "near" else {}
    with runs.track(lake, brain_key=cfg.brain_key, method=f"duplicates_{cfg.method}", dataset=conf.dataset,
                    inputs=inputs, config=conf.model_dump(), policy=conf.runs,
                    engine_versions=versions("numpy", "scipy", "pyarrow") if in_process else versions(
                        "pyspark", "numpy", "scipy", "opencv-python-headless"),
                    executed_on=None if in_process else spark_where(spark)) as run:
        if cfg.method == "near":
            patch_run = indexed_patches(lake, runs.get_run(lake, inputs["neighbors"]))
            rows = (near_rows_in_process(lake, conf, inputs["neighbors"], run.metrics, patches=patch_run is not None)
                    if in_process else
                    near_rows(spark, lake, conf, inputs["neighbors"], run, patches=patch_run is not None))
            if patch_run is not None:
                rows = patch_rows(lake, rows, patch_run)
            fixed = {"run_id": run.run_id, "brain_key": cfg.brain_key, "method": "near"}
            constant = {k: pa.array([v] * rows.num_rows, pa.string()) for k, v in fixed.items()}
            run.write("duplicates", pa.table({**constant, **dict(zip(rows.column_names, rows.columns))}))
            run.metrics["groups"] = float(len(pc.unique(rows["group_id"])))
        else:
            from pyspark.sql import functions as F
            from pyspark.sql.pandas.types import from_arrow_schema

            from jobs.spark_lake import write_staged

            rows = exact_rows(spark, lake, conf)
            out = rows.select(F.lit(run.run_id).alias("run_id"), F.lit(cfg.brain_key).alias("brain_key"), "method",
                              "group_id", "kept_sample_id", "sample_id", "distance",
                              *(F.lit(None).cast(f.dataType).alias(f.name) for f in from_arrow_schema(
                                  pa.schema(fields_of("duplicates", *DUPLICATE_PATCH_COLUMNS)))))
            write_staged(out, run, "duplicates")
            groups = run.read_staged("duplicates", columns=["group_id"])
            run.metrics["groups"] = float(len(pc.unique(groups["group_id"])))
    verified = (f" ({run.metrics['candidates']:.0f} candidate pairs: {run.metrics['verified']:.0f} verified, "
                f"{run.metrics['reused']:.0f} verdicts reused)" if "verified" in run.metrics else "")
    log.info("duplicates (%s): %d duplicates in %d groups%s in %.1f s", cfg.method,
             run.rows_written.get("duplicates", 0), run.metrics["groups"], verified, time.perf_counter() - started)
    return run.run_id


JOB = Job(name="duplicates", engine="spark", help="near or exact duplicate groups on Spark",
          reads=("neighbors", "samples"),
          writes=("duplicates",),
          run=run)


if __name__ == "__main__":
    JOB.main()
