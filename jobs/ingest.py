"""Ingest job: register a dataset's images as `samples` rows (errors to `ingest_errors`)."""

from __future__ import annotations

import logging
import os
import time

import pyarrow.compute as pc

from brain import ingest, progress, runs
from brain.config import Conf, ConfError
from brain.lake import Lake, plain_strings
from jobs.registry import Job, Option

log = logging.getLogger("jobs.ingest")


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    source = conf.ingest
    started = time.perf_counter()
    if bool(source.source) == bool(source.manifest):
        raise ConfError("ingest needs exactly one of ingest.source (a folder) or ingest.manifest (a file)")
    files = ingest.source_files(source)
    if not files:
        raise ValueError(f"ingest source {source.source or source.manifest} holds no files")
    with runs.track(lake, brain_key=f"ingest_{conf.dataset}", method="ingest", dataset=conf.dataset,
                    config=conf.model_dump(), policy=conf.runs) as run:
        samples, errors = ingest.probe(progress.iterate(files, desc="ingest", unit="files"),
                                       dataset=conf.dataset, run_id=run.run_id, limits=conf.images.limits(),
                                       workers=source.workers or os.cpu_count() or 1,
                                       parallel_min=source.parallel_min)
        ingest.check_new_ids(plain_strings(lake.read("samples", columns=["sample_id", "uri"],
                                                     filter=pc.field("dataset") == conf.dataset)), samples)
        if samples.num_rows:
            run.upsert("samples", samples, key="sample_id")
        if errors.num_rows:
            run.write("ingest_errors", errors)
    log.info("ingest: %d samples, %d errors from %d files in %.1f s", samples.num_rows, errors.num_rows,
             len(files), time.perf_counter() - started)
    for reason in errors["reason"].to_pylist()[:10]:
        log.warning("not ingested: %s", reason)
    return run.run_id


JOB = Job(name="ingest", engine="driver", help="register a dataset's images",
          reads=(),
          writes=("samples", "ingest_errors"),
          run=run,
          options=(Option("--source", "ingest.source", "folder in class-per-subfolder layout", clears=("ingest.manifest",)),
                   Option("--manifest", "ingest.manifest", "CSV or Parquet manifest with a uri column", clears=("ingest.source",)),
                   Option("--split", "ingest.split", "split for samples whose source names none"),
                   Option("--dataset", "dataset", "dataset name (default: the config's)")))


if __name__ == "__main__":
    JOB.main()
