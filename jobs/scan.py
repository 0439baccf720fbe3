"""Scheduled lake scan: bring every result of a dataset up to date with its sources, doing only the new work.

    lock (one scan per dataset) → runs left `running` by a dead job of the dataset: marked failed, outputs removed
      → diff the sources with `samples` (new / changed / removed files)        brain.scan.diff_sources
      → plan: the dataset's current runs as a graph of their inputs            brain.scan.plan_refresh
        (`brain scan --plan` prints it and stops here)
      → in topological order, every run whose input changed, made again under the same brain key:
        ingest the new and changed files, drop the removed ones  run `ingest_<dataset>`   incremental
        embed the samples the embeddings run lacks or that changed run `embeddings`       incremental
          (the other vectors are carried over, so each run is complete)
        update the kNN graph: search the new vectors, merge them    run `knn`              incremental
          into the unaffected rows' lists, re-search rows that lost a neighbour
        uniqueness (normalised by the dataset's maximum)            run `uniqueness`       full
        and every other run recorded with `scan.rerun: follow`, with its own recorded config:
          near duplicates (candidates from the updated graph; pixel verdicts   incremental
          of unchanged pairs reused from the replaced run),
          exact duplicates, leaks, unique subset, predictions
          (apply-model, linear probe), hardness, mistakenness, familiarity (fit and scores),
          comparison, visualization (the map is fitted again), patch embeddings,
          detection mistakenness                                                           full

The scan's own steps (ingest, embeddings, kNN, uniqueness of the scan's config) always follow
and are made when missing. Runs recorded with ``scan.rerun: manual`` (runs made by hand, by
default) and runs registered from outside are listed in the plan as stale and left as made.

Every step decides from the lake's state, not from the diff, what it still has to do: a
scan killed part-way left only whole runs committed (each a single Delta commit, its
catalog row `running` until then), and the next scan continues after the last committed
step. Steps with at most ``scan.in_process_max`` new samples run in this process (no Ray,
no Spark start) where the method allows (ingest, embeddings, kNN, uniqueness); the others on
the configured Ray and Spark. Full recomputes with little work per row run in this process
too while the dataset has at most ``scan.in_process_rows`` samples: uniqueness, and near
duplicates by ``thresh`` or ``fraction`` (no pixel verification): at 1M samples their work
takes seconds, Spark's fixed costs (start, stages, shuffles) most of their time there. The
same jobs run outside a scan (`brain uniqueness`, `brain duplicates`) stay on Spark.
"""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from brain import ingest, runs
from brain.config import Conf, ConfError
from brain.lake import Lake, plain_strings
from brain.scan import Refresh, RunKind, ScanLock, SourceDiff, diff_sources, plan_refresh
from brain.schemas import INGEST_ERRORS
from jobs.registry import Job, load_jobs

log = logging.getLogger("jobs.scan")


def _latest(lake: Lake, key: str) -> dict | None:
    try:
        return runs.latest_succeeded(lake, key)
    except runs.RunNotFoundError:
        return None


def with_sources(lake: Lake, conf: Conf) -> Conf:
    """The config with its ingest source; when it names none, the one the dataset was last ingested from."""
    if conf.ingest.source or conf.ingest.manifest:
        return conf
    last = _latest(lake, f"ingest_{conf.dataset}")
    if last is None:
        raise ConfError(f"scan needs ingest.source or ingest.manifest: dataset {conf.dataset!r} was never "
                        f"ingested into {lake.uri}")
    recorded = json.loads(last["config"])["ingest"]
    return conf.model_copy(update={"ingest": conf.ingest.model_copy(update=recorded)})


def ingest_step(lake: Lake, conf: Conf, diff) -> None:
    """Ingest new and changed files, delete removed samples; carry still-bad files' errors over."""
    previous = _latest(lake, f"ingest_{conf.dataset}")
    with runs.track(lake, brain_key=f"ingest_{conf.dataset}", method="ingest", dataset=conf.dataset,
                    config=conf.model_dump(), policy=conf.runs,
                    inputs={"previous": previous["run_id"]} if previous else {}) as run:
        samples, errors = ingest.probe(diff.new + diff.changed, dataset=conf.dataset, run_id=run.run_id,
                                       limits=conf.images.limits())
        ingest.check_new_ids(plain_strings(lake.read("samples", columns=["sample_id", "uri"],
                                                     filter=pc.field("dataset") == conf.dataset)), samples)
        if samples.num_rows:
            run.upsert("samples", samples, key="sample_id")
        if diff.removed:
            ids = ", ".join(runs.sql_literal(s) for s in diff.removed)
            run.delete("samples", f"sample_id IN ({ids})")
        parts = [errors]
        if previous is not None:
            probed = pa.array([f.uri for f in diff.new + diff.changed], pa.string())
            old = plain_strings(lake.read("ingest_errors", filter=(pc.field("run_id") == previous["run_id"])
                                          & (pc.field("stage") == "ingest")))
            old = old.filter(pc.invert(pc.is_in(old["uri"], probed)))
            parts.append(old.set_column(0, "run_id", pa.array([run.run_id] * old.num_rows, pa.string())))
        kept = pa.concat_tables([p.cast(INGEST_ERRORS) for p in parts])
        if kept.num_rows:
            run.write("ingest_errors", kept)
        run.metrics.update(removed=float(len(diff.removed)))


def embed_step(lake: Lake, conf: Conf) -> int | None:
    """Embed what the latest embeddings run lacks; None when it is complete. Returns how many were embedded."""
    from jobs import embed

    view = embed.select_samples(lake, conf)
    previous = _latest(lake, conf.embed.brain_key)
    if previous is None:
        embed.run(conf, in_process=view.num_rows <= conf.scan.in_process_max)
        return view.num_rows
    done = lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == previous["run_id"])["sample_id"]
    refused = lake.read("ingest_errors", columns=["uri"], filter=pc.field("run_id") == previous["run_id"])["uri"]
    ingested = lake.read("samples", columns=["sample_id", "ingested_at"], filter=pc.field("dataset") == conf.dataset)
    changed = ingested.filter(pc.greater_equal(ingested["ingested_at"], pa.scalar(previous["started_at"],
                                                                                   ingested["ingested_at"].type)))
    settled = pc.or_(pc.is_in(view["sample_id"], done), pc.is_in(view["uri"], refused.cast(pa.string())))
    todo = view.filter(pc.or_(pc.invert(settled), pc.is_in(view["sample_id"], changed["sample_id"])))
    gone = pc.sum(pc.invert(pc.is_in(done, view["sample_id"]))).as_py() or 0
    if todo.num_rows == 0 and gone == 0:
        return None
    embed.run(conf, sample_ids=todo["sample_id"].to_pylist(), carry_from=previous["run_id"],
              in_process=todo.num_rows <= conf.scan.in_process_max)
    return todo.num_rows


def neighbors_step(lake: Lake, conf: Conf) -> int | None:
    """Bring the kNN graph up to date with the latest embeddings run; None when it is. Returns fresh rows."""
    from jobs import neighbors

    cfg = conf.neighbors
    source = runs.latest_succeeded(lake, cfg.embeddings_key)
    previous = _latest(lake, cfg.brain_key)
    if previous is not None and dict(previous["input_run_ids"] or []).get("embeddings") == source["run_id"]:
        return None
    ids = lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == source["run_id"])["sample_id"]
    if previous is not None:
        old_conf = json.loads(previous["config"])["neighbors"]
        graph = lake.read("neighbors", columns=["sample_id"], filter=pc.field("run_id") == previous["run_id"])
        ingested = lake.read("samples", columns=["sample_id", "ingested_at"],
                             filter=pc.field("dataset") == conf.dataset)
        recent = ingested.filter(pc.greater_equal(ingested["ingested_at"], pa.scalar(
            previous["started_at"], ingested["ingested_at"].type)))["sample_id"]
        fresh = pc.filter(ids, pc.or_(pc.invert(pc.is_in(ids, graph["sample_id"])), pc.is_in(ids, recent)))
        same_graph = old_conf["k"] == cfg.k and old_conf["metric"] == cfg.metric
        # the update runs on Ray like a rebuild; it searches only the rows whose lists can change
        if same_graph and len(fresh) <= conf.scan.knn_update_max_share * len(ids):
            neighbors.update(conf, previous=previous["run_id"], fresh_ids=fresh)
            return len(fresh)
    neighbors.run(conf)
    return len(ids)


def uniqueness_step(lake: Lake, conf: Conf, fresh: int) -> bool:
    """Score again when the kNN graph it read was replaced; False when it is up to date."""
    from jobs import uniqueness

    source = runs.latest_succeeded(lake, conf.uniqueness.neighbors_key)
    previous = _latest(lake, conf.uniqueness.brain_key)
    if previous is not None and dict(previous["input_run_ids"] or []).get("neighbors") == source["run_id"]:
        return False
    # normalisation is over the dataset's maximum, so every score is recomputed: in this process for small
    # updates and for datasets whose distances fit it (Spark's start and stages outweigh the work there)
    uniqueness.run(conf, in_process=fresh <= conf.scan.in_process_max or fits_in_process(lake, conf))
    return True


def fits_in_process(lake: Lake, conf: Conf) -> bool:
    """Whether the dataset has at most ``scan.in_process_rows`` samples (full recomputes then skip Spark)."""
    return lake.dataset("samples").count_rows(filter=pc.field("dataset") == conf.dataset) <= conf.scan.in_process_rows


# The job that makes a run of each method again. Embeddings and predictions runs come from
# several jobs: told apart by their recorded config (below).
JOB_OF_METHOD = {"neighbors": "neighbors", "uniqueness": "uniqueness", "duplicates_near": "duplicates",
                 "duplicates_exact": "duplicates", "leaks": "leaks", "unique": "unique", "hardness": "hardness",
                 "mistakenness": "label-quality", "familiarity": "familiarity", "comparison": "compare",
                 "visualization": "visualize", "detection_mistakenness": "detection-mistakenness",
                 "patch_embeddings": "patch-embeddings"}
# The config field holding the brain key each job writes: a re-run writes the run's key (renames included).
KEY_FIELD = {"embed": "embed.brain_key", "apply-model": "apply_model.brain_key", "linear-probe": "linear_probe.brain_key",
             "patch-embeddings": "patches.brain_key", "neighbors": "neighbors.brain_key",
             "uniqueness": "uniqueness.brain_key", "duplicates": "duplicates.brain_key", "leaks": "leaks.brain_key",
             "unique": "unique.brain_key", "hardness": "label_quality.hardness_key",
             "label-quality": "label_quality.brain_key", "detection-mistakenness": "label_quality.detection_key",
             "familiarity": "familiarity.brain_key", "compare": "comparison.brain_key",
             "visualize": "visualization.brain_key"}
INCREMENTAL_JOBS = ("embed", "neighbors")  # carry unchanged samples' rows over; the others recompute in full
# near duplicates recompute their candidates but verify on pixels only pairs with a new or changed file
INCREMENTAL_METHODS = ("duplicates_near",)
# Where and how a run executes: a re-run takes these from the scan's config, the rest from the run's record.
SETTINGS_SECTIONS = ("lake", "code_paths", "ray", "spark", "runs", "submit", "scan", "models")


def job_of(run: dict) -> str | None:
    """The job that makes ``run`` again; None for rows registered from outside (nothing to re-run)."""
    config = json.loads(run["config"] or "{}")
    if run["method"] in ("embeddings", "predictions"):
        if config.get("model") == "linear_probe":
            return "linear-probe"
        if "_resume_settings" in config:  # made by the model pipeline (embed, apply-model)
            return "embed" if run["method"] == "embeddings" else "apply-model"
        return None  # register-embeddings, register-predictions
    if run["method"] == "visualization" and (config.get("visualization") or {}).get("points"):
        return None  # registered points
    return JOB_OF_METHOD.get(run["method"])


def kind_of(run: dict) -> RunKind | None:
    job = job_of(run)
    if job is None:
        return None
    return RunKind(job, incremental=job in INCREMENTAL_JOBS or run["method"] in INCREMENTAL_METHODS,
                   reads_samples="samples" in load_jobs()[job].reads)


def follows(run: dict) -> bool:
    """Whether the run was recorded with ``scan.rerun: follow``."""
    return (json.loads(run["config"] or "{}").get("scan") or {}).get("rerun") == "follow"


def pipeline(conf: Conf) -> list[tuple[str, str, RunKind]]:
    """The scan's own steps after ingest: made when missing, always kept fresh."""
    return [(conf.embed.brain_key, "embeddings", RunKind("embed", incremental=True, reads_samples=True)),
            (conf.neighbors.brain_key, "neighbors", RunKind("neighbors", incremental=True, reads_samples=False)),
            (conf.uniqueness.brain_key, "uniqueness", RunKind("uniqueness", incremental=False, reads_samples=False))]


def plan(lake: Lake, conf: Conf, diff: SourceDiff) -> list[Refresh]:
    change = None if diff.empty else (f"samples: {len(diff.new)} new, {len(diff.changed)} changed, "
                                      f"{len(diff.removed)} removed files")
    return plan_refresh(runs.catalog(lake).runs, dataset=conf.dataset, ingest_key=f"ingest_{conf.dataset}",
                        samples_change=change, pipeline=pipeline(conf), kind_of=kind_of, follows=follows)


def _unredacted(recorded, current):
    """``recorded`` with the credentials the record hides (``***``) taken from ``current``."""
    if recorded == runs.REDACTED:
        return current
    if isinstance(recorded, dict) and isinstance(current, dict):
        return {k: _unredacted(v, current.get(k)) for k, v in recorded.items()}
    return recorded


def rerun_conf(run: dict, conf: Conf, job: str) -> Conf:
    """The config that makes ``run`` again with ``job``: its recorded computation and key, the scan's engines and lake."""
    data = conf.model_dump()
    for section, value in json.loads(run["config"]).items():
        if section in Conf.model_fields and section not in SETTINGS_SECTIONS:
            data[section] = _unredacted(value, data[section])
    section, field = KEY_FIELD[job].split(".")
    data[section][field] = run["brain_key"]
    try:
        return Conf.model_validate(data)
    except ValidationError as err:
        raise ConfError(f"run {run['run_id']} ({run['method']}, key {run['brain_key']!r}): its recorded config "
                        f"does not validate any more ({err.errors()[0]['loc']}: {err.errors()[0]['msg']}); "
                        f"make it again by hand, or delete it") from None


def _refresh(lake: Lake, conf: Conf, step: Refresh, diff: SourceDiff, fresh: int) -> int | None:
    """Make ``step``'s key again; None when the lake shows it is already up to date. Returns rows refreshed."""
    from jobs import duplicates, label_quality

    if step.kind.job == "ingest":
        ingest_step(lake, conf, diff)
        return len(diff.new) + len(diff.changed)
    if step.brain_key in {key for key, _, _ in pipeline(conf)}:  # the scan's own steps: the scan's config
        job_conf = conf
    else:
        job_conf = rerun_conf(runs.latest_succeeded(lake, step.brain_key), conf, step.kind.job)
    job = step.kind.job
    if job == "embed":
        return embed_step(lake, job_conf)
    if job == "neighbors":
        return neighbors_step(lake, job_conf)
    if job == "uniqueness":
        return fresh if uniqueness_step(lake, job_conf, fresh) else None
    if job == "duplicates" and duplicates.runs_in_process(job_conf.duplicates) and fits_in_process(lake, job_conf):
        duplicates.run(job_conf, in_process=True)  # by embedding distance only: seconds of work in this process
    elif job == "label-quality":  # its hardness run is a run of its own (the hardness job)
        label_quality.run_mistakenness(job_conf)
    else:
        load_jobs()[job].run(job_conf)
    return fresh


def print_plan(conf: Conf) -> list[Refresh]:
    """`brain scan --plan`: what a scan would make again and why; runs nothing."""
    lake = Lake.from_conf(conf)
    conf = with_sources(lake, conf)
    diff = diff_sources(lake, conf.dataset, ingest.source_files(conf.ingest))
    steps = plan(lake, conf, diff)
    print(f"scan plan of {conf.dataset!r}: {len(diff.new)} new, {len(diff.changed)} changed, {len(diff.removed)} "
          f"removed, {diff.unchanged} unchanged files; nothing was run")
    for step in steps:
        print(f"  {'run ' if step.runs else 'skip'} {step.describe()}")
    if not steps:
        print("  no new work: every run of the dataset is fresh")
    return steps


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    conf = with_sources(lake, conf)
    conf = conf.model_copy(update={"scan": conf.scan.model_copy(update={"rerun": "follow"})})  # its runs follow
    started = time.perf_counter()
    with ScanLock(lake, conf.dataset, stale_after_s=conf.scan.lock_stale_s, heartbeat_s=conf.scan.heartbeat_s):
        left = runs.abandon_stale(lake, dataset=conf.dataset, policy=conf.runs)
        with runs.track(lake, brain_key=f"scan_{conf.dataset}", method="scan", dataset=conf.dataset,
                        config=conf.model_dump(), policy=conf.runs) as scan:
            diff = diff_sources(lake, conf.dataset, ingest.source_files(conf.ingest))
            todo = plan(lake, conf, diff)
            scan.metrics.update(new=len(diff.new), changed=len(diff.changed), removed=len(diff.removed),
                                unchanged=diff.unchanged, abandoned_runs=len(left))
            steps, fresh = [], len(diff.new) + len(diff.changed)
            for step in todo:
                if not step.runs:
                    scan.warn(step.describe())
                    continue
                done = _refresh(lake, conf, step, diff, fresh)
                if done is not None:
                    steps.append(step.brain_key)
                    if step.kind.job == "embed":
                        scan.metrics["embedded"] = done
                    if step.kind.job == "neighbors":
                        fresh = done
            scan.metrics["steps"] = len(steps)
    took = time.perf_counter() - started
    if steps:
        print(f"scan of {conf.dataset!r}: {len(diff.new)} new, {len(diff.changed)} changed, {len(diff.removed)} "
              f"removed; ran {', '.join(steps)} in {took:.1f} s")
    else:
        print(f"scan of {conf.dataset!r}: no new work ({diff.unchanged} files unchanged, {took:.1f} s)")
    return scan.run_id


JOB = Job(name="scan", engine="ray", help="incremental scan of the dataset's sources: every following run made "
                                         "fresh (what a scheduler runs; --plan: say what, run nothing)",
          reads=("samples", "embeddings", "neighbors", "ingest_errors", "predictions", "duplicates"),
          writes=("samples", "ingest_errors", "embeddings", "neighbors", "uniqueness", "duplicates", "leaks", "unique",
                  "predictions", "hardness", "mistakenness", "label_quality_classes", "label_confusion",
                  "familiarity", "familiarity_extremes", "familiarity_comparison", "visualization",
                  "patch_embeddings", "detection_mistakenness", "detection_objects", "detection_labels"),
          run=run)


if __name__ == "__main__":
    JOB.main()
