"""A scan's plan: the dataset's current runs as a graph of their inputs, made again in order (brain.scan.plan_refresh)."""

import datetime as dt
import json

import pyarrow as pa

from brain.scan import RunKind, plan_refresh
from brain.schemas import RUNS

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
KINDS = {"embeddings": RunKind("embed", incremental=True, reads_samples=True),
         "neighbors": RunKind("neighbors", incremental=True, reads_samples=False),
         "uniqueness": RunKind("uniqueness", incremental=False, reads_samples=False),
         "duplicates_near": RunKind("duplicates", incremental=True, reads_samples=True),
         "leaks": RunKind("leaks", incremental=False, reads_samples=True),
         "visualization": RunKind("visualize", incremental=False, reads_samples=False),
         "predictions": RunKind("apply-model", incremental=False, reads_samples=True)}
PIPELINE = [("emb", "embeddings", KINDS["embeddings"]), ("knn", "neighbors", KINDS["neighbors"]),
            ("uniq", "uniqueness", KINDS["uniqueness"])]


def _run(run_id, key, method, minute, *, current=True, follow=True, **inputs):
    at = T0 + dt.timedelta(minutes=minute)
    return {"run_id": run_id, "brain_key": key, "method": method, "dataset": "pets",
            "status": "succeeded" if current else "superseded", "current": current,
            "input_run_ids": sorted(inputs.items()), "started_at": at, "finished_at": at + dt.timedelta(seconds=30),
            "config": json.dumps({"scan": {"rerun": "follow" if follow else "manual"}})}


def _plan(rows, samples_change=None):
    return plan_refresh(pa.Table.from_pylist(rows, schema=RUNS), dataset="pets", ingest_key="ingest_pets",
                        samples_change=samples_change, pipeline=PIPELINE,
                        kind_of=lambda run: KINDS.get(run["method"]),
                        follows=lambda run: json.loads(run["config"])["scan"]["rerun"] == "follow")


def test_a_new_ingest_refreshes_what_read_the_old_samples_and_everything_downstream_in_order():
    rows = [_run("i1", "ingest_pets", "ingest", 0, current=False), _run("e1", "emb", "embeddings", 1),
            _run("k1", "knn", "neighbors", 2, embeddings="e1"), _run("d1", "dups", "duplicates_near", 3, neighbors="k1"),
            _run("l1", "leaks", "leaks", 4, duplicates="d1"), _run("u1", "uniq", "uniqueness", 5, neighbors="k1"),
            _run("m1", "my_map", "visualization", 6, follow=False, embeddings="e1"),
            _run("p1", "preds", "predictions", 7), _run("r1", "registered", "registered_boxes", 7),
            _run("i2", "ingest_pets", "ingest", 8, previous="i1")]
    plan = _plan(rows)
    order = [step.brain_key for step in plan]
    assert order.index("emb") < order.index("knn") < min(order.index("dups"), order.index("uniq"))
    assert order.index("dups") < order.index("leaks") and "registered" not in order
    by_key = {step.brain_key: step for step in plan}
    assert by_key["emb"].changed == ("samples: i1 → i2",) and by_key["emb"].kind.incremental
    assert by_key["preds"].changed == ("samples: i1 → i2",) and not by_key["preds"].kind.incremental
    assert by_key["uniq"].changed == ("neighbors: k1 → new",) and by_key["uniq"].runs
    assert not by_key["my_map"].runs and "left stale: made by hand" in by_key["my_map"].describe()


def test_nothing_changed_nothing_planned_and_a_replaced_input_is_named_old_to_current():
    rows = [_run("i1", "ingest_pets", "ingest", 0), _run("e1", "emb", "embeddings", 1),
            _run("k1", "knn", "neighbors", 2, current=False, embeddings="e1"),
            _run("k2", "knn", "neighbors", 3, embeddings="e1", previous="k1"),
            _run("u2", "uniq", "uniqueness", 4, neighbors="k2")]
    assert _plan(rows) == []
    rows.append(_run("d1", "dups", "duplicates_near", 2, neighbors="k1"))  # read the graph k2 replaced
    assert [(s.brain_key, s.changed) for s in _plan(rows)] == [("dups", ("neighbors: k1 → k2",))]


def test_an_empty_lake_plans_ingest_then_the_scans_own_steps():
    plan = _plan([], samples_change="samples: 3 new, 0 changed, 0 removed files")
    assert [(s.brain_key, s.run_id, s.changed[0]) for s in plan] == [
        ("ingest_pets", None, "samples: 3 new, 0 changed, 0 removed files"), ("emb", None, "no run yet"),
        ("knn", None, "no run yet"), ("uniq", None, "no run yet")]


def test_a_rerun_takes_the_recorded_computation_and_key_and_the_scans_engines_and_credentials():
    from brain.config import Conf
    from brain.runs import recorded_config
    from jobs.scan import job_of, rerun_conf

    made = Conf(lake="/old/lake", dataset="pets")
    made.duplicates.candidate_thresh = 0.05
    made.duplicates.brain_key = "dups"
    made.spark.conf = {"fs.s3a.secret.key": "made-with"}
    run = {"run_id": "d1", "brain_key": "dups_v2", "method": "duplicates_near", "config": recorded_config(
        made.model_dump())}  # the key was renamed since
    scanning = Conf(lake="/lake", dataset="pets")
    scanning.spark.conf = {"fs.s3a.secret.key": "scan-has"}
    conf = rerun_conf(run, scanning, job_of(run))
    assert (conf.duplicates.candidate_thresh, conf.duplicates.brain_key) == (0.05, "dups_v2")
    assert conf.lake == "/lake" and conf.spark.conf == {"fs.s3a.secret.key": "scan-has"}
