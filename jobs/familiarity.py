"""Familiarity job: fit a density model on an embeddings run (driver), score samples with it (Spark).

    fit:   a random sample of at most familiarity.max_fit_samples rows of the fit set
           → brain.methods.familiarity.fit (PCA + GMM, or the strategy familiarity.strategy names by import
             path, storable without pickle; one density per label/split if familiarity.per)
           → _artifacts/<run_id>/familiarity.npz (arrays + JSON, no pickle) and fit_scores.npy
    score: embeddings (familiarity.score_key, default the fit run) ⋈ samples
           → mapInArrow: each Python worker loads the model with Lake.read_artifact and scores its batches
           → `familiarity` (score = NLL, percentile among the fit sample's scores)
           → per label, the extremes_count most and least familiar → `familiarity_extremes`

Fits and scoring use one BLAS thread (threadpoolctl): Spark already runs one Python worker per
core, and on a shared machine multi-threaded BLAS over these small matrices mostly spins.

Spark rather than Ray for scoring: scoring is a map over a join of two lake tables
(embeddings and samples, for the per-label/per-split model), followed by a group-by
label; Spark does the join, the shuffle and the per-group step, and its workers
read the model from the lake, so nothing but the run id travels with the tasks.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

from brain import results, runs, vectors
from brain.plugins import import_object
from brain.config import Conf, FamiliarityConf
from brain.schemas import FAMILIARITY_EXTREMES, fields_of
from brain.lake import Lake
from brain.methods import familiarity as fam
from jobs.registry import Job

log = logging.getLogger("jobs.familiarity")

# What score_batches yields: a familiarity row's score and percentile with the sample's label.
SCORED = pa.schema([*fields_of("familiarity", "sample_id"), *fields_of("samples", "label"),
                    *fields_of("familiarity", "score", "percentile")])


def density_options(cfg: FamiliarityConf, *, seed: bool) -> dict:
    """Keyword arguments for brain.methods.familiarity's fit/compare: the strategy ``familiarity.strategy``
    names (checked to be storable without pickle), or the default density's parameters (with the seed)."""
    if cfg.strategy:
        strategy = import_object(cfg.strategy, what="familiarity.strategy")(**cfg.strategy_params)
        fam.check_storable(strategy)
        return {"strategy": strategy}
    params = dict(reduced_dims=cfg.reduced_dims, gaussian_count=cfg.gaussian_count,
                  covariance_type=cfg.covariance_type, convergence_threshold=cfg.convergence_threshold,
                  max_iterations=cfg.max_iterations)
    return {"seed": cfg.seed, **params} if seed else params


def groups_of(rows: pa.Table, per: str | None, what: str) -> np.ndarray | None:
    """The per-label/per-split group of each row (None without ``per``); a sample without one is an error."""
    if per is None:
        return None
    column = rows.column(per)
    if column.null_count:
        bad = rows.column("sample_id")[int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])]
        raise ValueError(f"familiarity.per={per!r}, but sample {bad} of {what} has no {per}")
    return np.asarray(column.to_pylist(), dtype=str)


def fit_model(lake: Lake, cfg: FamiliarityConf, fit_set: vectors.VectorSet) -> tuple[fam.FamiliarityModel, np.ndarray, int]:
    """The fitted model, the sorted scores of its fit sample, and how many rows the fit set has."""
    rows = vectors.members(lake, fit_set)
    chosen = vectors.sample(rows, cfg.max_fit_samples, seed=cfg.seed)
    x = vectors.read_vectors(lake, fit_set.run_id, chosen["sample_id"].combine_chunks())
    groups = groups_of(chosen, cfg.per, f"fit set {fit_set.spec!r}")
    try:
        with threadpool_limits(1):
            model = fam.fit(x, groups, **density_options(cfg, seed=True))
    except ValueError as err:
        raise ValueError(f"familiarity fit on {fit_set.spec!r} ({x.shape[0]} samples, "
                         f"gaussian_count={cfg.gaussian_count}): {err}") from None
    with threadpool_limits(1):
        return model, np.sort(model.score(x, groups)), rows.num_rows


def score_batches(batches: Iterator[pa.RecordBatch], *, lake: Lake, model_run_id: str, embeddings_run_id: str,
                  per: str | None) -> Iterator[pa.RecordBatch]:
    """(sample_id, vector, label, split) → (sample_id, label, score, percentile), model loaded once per task."""
    model, fit_scores = results.familiarity_model(lake, model_run_id)
    for batch in batches:
        if len(batch) == 0:
            continue
        x = vectors.matrix(batch, embeddings_run_id)
        groups = groups_of(pa.Table.from_batches([batch]), per, f"embeddings run {embeddings_run_id}")
        with threadpool_limits(1):
            scores = model.score(x, groups)
        percentile = 100.0 * np.searchsorted(fit_scores, scores, side="right") / fit_scores.shape[0]
        yield pa.RecordBatch.from_arrays(
            [batch.column("sample_id"), batch.column("label"), pa.array(scores), pa.array(percentile)],
            names=["sample_id", "label", "score", "percentile"])


def extremes_of(table: pa.Table, *, count: int, run_id: str, brain_key: str) -> pa.Table:
    """One label's (sample_id, label, score) → its ``count`` most and least familiar rows."""
    ends = fam.most_least_familiar(table.column("score").to_numpy(), count=count)
    n = len(ends["index"])
    return pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "brain_key": pa.array([brain_key] * n, pa.string()),
        "label": table.column("label").take(pa.array(ends["index"])),
        "which_end": pa.array(ends["which_end"].tolist(), pa.string()),
        "rank": pa.array(ends["rank"], pa.int32()),
        "sample_id": table.column("sample_id").take(pa.array(ends["index"])),
        "score": pa.array(ends["score"]),
    })


def run(conf: Conf) -> str:
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    from jobs.engines import ship_code_to_spark, spark_session, spark_where
    from jobs.spark_lake import read_table, write_staged

    lake = Lake.from_conf(conf)
    cfg = conf.familiarity
    fit_set = vectors.resolve(lake, cfg.embeddings_key + (f"@{cfg.fit_split}" if cfg.fit_split else ""))
    score_set = vectors.resolve(lake, cfg.score_key) if cfg.score_key else vectors.resolve(lake, cfg.embeddings_key)
    spark = spark_session(conf)
    ship_code_to_spark(spark, conf)  # a custom strategy's module: the workers reload the model
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="familiarity", dataset=score_set.dataset,
                    inputs={"fit": fit_set.run_id, "score": score_set.run_id}, config=conf.model_dump(),
                    policy=conf.runs, executed_on=spark_where(spark)) as run:
        model, fit_scores, fit_rows = fit_model(lake, cfg, fit_set)
        run.write_artifact(results.FAMILIARITY_MODEL_ARTIFACT, model.save(io.BytesIO()).getvalue())
        blob = io.BytesIO()
        np.save(blob, fit_scores, allow_pickle=False)
        run.write_artifact(results.FAMILIARITY_FIT_SCORES_ARTIFACT, blob.getvalue())
        run.metrics.update(fit_samples=float(fit_scores.shape[0]), fit_set_samples=float(fit_rows),
                           fit_mean_score=float(fit_scores.mean()))
        fit_seconds = time.perf_counter() - started

        run_id, key, per, emb_run = run.run_id, cfg.brain_key, cfg.per, score_set.run_id
        embeddings = (read_table(spark, lake, "embeddings").where(F.col("run_id") == score_set.run_id)
                      .select("sample_id", "vector"))
        samples = read_table(spark, lake, "samples").select("sample_id", "label", "split")
        joined = embeddings.join(samples, "sample_id", "left")
        if score_set.split:
            joined = joined.where(F.col("split") == score_set.split)
        scored = joined.mapInArrow(lambda it: score_batches(it, lake=lake, model_run_id=run_id,
                                                            embeddings_run_id=emb_run, per=per),
                                   from_arrow_schema(SCORED)).cache()
        write_staged(scored.select(F.lit(run_id).alias("run_id"), F.lit(key).alias("brain_key"), "sample_id",
                                   "score", "percentile"), run, "familiarity")
        count = cfg.extremes_count
        write_staged(scored.select("sample_id", "label", "score").groupBy("label")
                     .applyInArrow(lambda t: extremes_of(t, count=count, run_id=run_id, brain_key=key),
                                   from_arrow_schema(FAMILIARITY_EXTREMES)), run, "familiarity_extremes")
        scored.unpersist()
        if run.staged_rows("familiarity") == 0:
            raise ValueError(f"embeddings run {score_set.run_id} ({score_set.spec!r}) has no samples to score")
    log.info("familiarity: fit on %d of %d samples of %r in %.1f s, %d samples of %r scored on Spark in %.1f s",
             fit_scores.shape[0], fit_rows, fit_set.spec, fit_seconds, run.rows_written["familiarity"],
             score_set.spec, time.perf_counter() - started - fit_seconds)
    return run.run_id


JOB = Job(name="familiarity", engine="spark", help="fit a familiarity model on embeddings, score samples on Spark",
          reads=("embeddings", "samples"),
          writes=("familiarity", "familiarity_extremes"),
          run=run)


if __name__ == "__main__":
    JOB.main()
