"""Embedding job on Ray Data: decode in tasks, embed in a pool of actors, commit to `embeddings`.

    samples of the run's view (dataset [+ embed.where], or a given subset), sorted and cut
    into shards of `embed.shard_size`
      → map_batches(decode_shard)               CPU tasks: read + decode + model.preprocess
      → map_batches(ModelActor, ActorPool)      the model stays loaded; 1 GPU per actor when present
      → one staged Parquet file per shard       invisible until the driver commits them
    Images that fail to decode become `ingest_errors` rows (stage "decode"); the rest is embedded.
    `embed.resume=true` continues an unfinished run with the same brain key: staged shards are kept.
    Incremental mode (`brain scan`): embed only some samples and carry the others' vectors over.
    (The pipeline itself: jobs/model_pipeline.py.)
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from brain import runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from jobs.model_pipeline import PipelineSpec, model_kwargs, run_pipeline
from jobs.registry import Job


def select_samples(lake: Lake, conf: Conf, sample_ids: list[str] | None = None) -> pa.Table:
    """(sample_id, uri, dataset) of the samples to embed: the run's view, or ``sample_ids`` within it."""
    from brain.sql_expr import rows_where

    predicate = runs.dataset_filter(conf.dataset, conf.embed.where)
    table = plain_strings(rows_where(lake, "samples", predicate, columns="sample_id, uri, dataset", what="embed.where"))
    if sample_ids is not None:
        table = table.filter(pc.is_in(table["sample_id"], pa.array(sample_ids, pa.string())))
    return table


CARRIED_FILE_ROWS = 65_536


def carry_forward(lake: Lake, from_run: str, to_run: str, keep: pa.Table) -> int:
    """Stage ``from_run``'s vectors and decode errors of the samples in ``keep`` as ``to_run``'s; returns vectors."""
    def moved(rows: pa.Table) -> pa.Table:
        return rows.set_column(rows.schema.get_field_index("run_id"), "run_id",
                               pa.array([to_run] * rows.num_rows, pa.string()))

    rows = plain_strings(lake.read("embeddings", filter=pc.field("run_id") == from_run))
    kept = pc.is_in(rows["sample_id"], keep["sample_id"])
    if not pc.all(kept).as_py():  # filtering copies every vector (seconds at 1M): only when some are dropped
        rows = rows.filter(kept)
    # in files of CARRIED_FILE_ROWS: the kNN job deals whole files to its shard actors
    for start in range(0, rows.num_rows, CARRIED_FILE_ROWS):
        lake.stage("embeddings", to_run, moved(rows.slice(start, CARRIED_FILE_ROWS)), name=f"carried-{start:010d}")
    errors = plain_strings(lake.read("ingest_errors", filter=pc.field("run_id") == from_run))
    errors = errors.filter(pc.is_in(errors["uri"], keep["uri"]))
    if errors.num_rows:
        lake.stage("ingest_errors", to_run, moved(errors), name="carried")
    return rows.num_rows


def run(conf: Conf, *, sample_ids: list[str] | None = None, carry_from: str | None = None,
        in_process: bool = False) -> str:
    """Embed the dataset's samples (the config's view) as a new run under ``conf.embed.brain_key``.

    Incremental mode (what ``brain scan`` uses): embed only ``sample_ids`` and carry the
    vectors of every other sample of the view over from run ``carry_from``, so the new
    run is complete on its own and supersedes the old one in one commit. ``in_process``
    embeds in this process instead of on Ray (for a few hundred images, no Ray start).
    """
    lake = Lake.from_conf(conf)
    view = select_samples(lake, conf)
    if view.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}"
                         f"{' matching ' + conf.embed.where if conf.embed.where else ''}: run `brain ingest` first")
    todo = view if sample_ids is None else view.filter(pc.is_in(view["sample_id"], pa.array(sample_ids, pa.string())))

    def finish(lake: Lake, run: runs.Run) -> None:
        if carry_from is not None:
            keep = view.filter(pc.invert(pc.is_in(view["sample_id"], todo["sample_id"])))
            run.metrics["carried"] = float(carry_forward(lake, carry_from, run.run_id, keep))
        run.metrics["embedded"] = float(run.staged_rows("embeddings") - run.metrics.get("carried", 0.0))

    kwargs = model_kwargs(conf, conf.embed.model, conf.embed.batch_size)
    return run_pipeline(conf, PipelineSpec(
        table="embeddings", brain_key=conf.embed.brain_key, method="embeddings",
        items=todo.select(["sample_id", "uri"]), model_name=conf.embed.model, model_kwargs=kwargs,
        shard_size=conf.embed.shard_size, resume=conf.embed.resume, in_process=in_process,
        sample_filter=runs.dataset_filter(conf.dataset, conf.embed.where),
        inputs={"carried_from": carry_from} if carry_from is not None else {}, finish=finish,
        settings=dict(model=conf.embed.model, kwargs=kwargs, shard_size=conf.embed.shard_size)))


JOB = Job(name="embed", engine="ray", help="embeddings on Ray Data",
          reads=("samples",),
          writes=("embeddings", "ingest_errors"),
          run=run)


if __name__ == "__main__":
    JOB.main()
