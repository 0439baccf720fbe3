"""Register embeddings computed elsewhere as an embeddings run (no model, no Ray).

    brain register-embeddings --file vecs.parquet [--id-column sample_id --vector-column vector]
    brain register-embeddings --file vecs.npy --ids ids.txt
    brain register-embeddings --samples-column clip_vector     # a samples column or attributes field

The rows go to `embeddings` under `register_embeddings.brain_key`, like a `brain embed` run,
so `brain neighbors --set neighbors.embeddings_key=...` and everything downstream use them.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc

from brain import register, runs
from brain.config import Conf
from brain.lake import Lake, plain_strings
from brain.vectors import to_list_array
from jobs.registry import Job, Option


def run(conf: Conf) -> str:
    cfg = conf.register_embeddings
    lake = Lake.from_conf(conf)
    started = time.perf_counter()
    samples = plain_strings(lake.read("samples", filter=pc.field("dataset") == conf.dataset))
    if samples.num_rows == 0:
        raise ValueError(f"dataset {conf.dataset!r} has no samples in {lake.uri}: run `brain ingest` first")
    if bool(cfg.file) == bool(cfg.samples_column):
        raise ValueError("give exactly one of register_embeddings.file (--file) or "
                         "register_embeddings.samples_column (--samples-column)")
    if cfg.file:
        ids, vectors = register.read_vector_file(cfg.file, ids_path=cfg.ids_file, id_column=cfg.id_column,
                                                 vector_column=cfg.vector_column)
    elif cfg.samples_column in samples.column_names:
        ids = samples["sample_id"].to_pylist()
        vectors = register.to_matrix(samples[cfg.samples_column].to_pylist(), ids)
    else:
        ids = samples["sample_id"].to_pylist()
        vectors = register.vectors_from_attributes(samples["attributes"].to_pylist(), cfg.samples_column, ids)
    register.check_ids(ids, set(samples["sample_id"].to_pylist()), dataset=conf.dataset)
    with runs.track(lake, brain_key=cfg.brain_key, method="embeddings", dataset=conf.dataset,
                    config=conf.model_dump(), policy=conf.runs, prepare_s=time.perf_counter() - started) as run:
        rows = pa.table({"run_id": pa.array([run.run_id] * len(ids), pa.string()),
                         "sample_id": pa.array(ids, pa.string()), "vector": to_list_array(vectors, ids)})
        run.write("embeddings", rows)
        run.metrics["dim"] = float(vectors.shape[1])
    return run.run_id


JOB = Job(name="register-embeddings", engine="driver", help="store embeddings computed elsewhere as a run",
          reads=("samples",),
          writes=("embeddings",),
          run=run,
          options=(Option("--file", "register_embeddings.file",
                          ".parquet (sample_id, vector), .npz (sample_id, vector) or .npy (with --ids)"),
                   Option("--ids", "register_embeddings.ids_file", "for .npy: a text file, one sample id per line"),
                   Option("--samples-column", "register_embeddings.samples_column",
                          "a samples column or attributes field holding the vectors"),
                   Option("--brain-key", "register_embeddings.brain_key",
                          "brain key of the run (default: register_embeddings.brain_key)")))


if __name__ == "__main__":
    JOB.main()
