"""Dataset comparison job: L(fit → predict), overall and per class, with a verdict band.

    comparison.fit, comparison.predict: vector sets NAME[@SPLIT] (brain.vectors: an embeddings
      brain key or a dataset name, optionally one split), e.g. embeddings@train and embeddings@test
    → at most familiarity.max_fit_samples random rows of each → brain.methods.familiarity.compare
      (cross-fitted PCA + GMM with the familiarity section's density parameters)
    → run.metrics["ratio"] and `familiarity_comparison` (label null = overall; one row per predict
      class when every sample of both sets has a label)

Verdict bands: L < 0.6 huge gap, 0.6–0.8 small gap, 0.8–1.2 fine, > 1.2 gap (the predict set is
more typical than the fit set, e.g. it covers only its dense modes). The fits run on the driver:
they see a bounded sample, and the cross-fitting (``folds`` fits per class) is the whole cost. They
run with one BLAS thread: the per-class, per-fold matrices are small, and on a shared 2-core machine
multi-threaded BLAS turned the digits comparison's 0.8 s of CPU into 41 s (threads spinning).
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
from threadpoolctl import threadpool_limits

from brain import runs, vectors
from brain.config import Conf
from brain.lake import Lake
from brain.methods import familiarity as fam
from jobs.familiarity import density_options
from jobs.registry import Job, Option

log = logging.getLogger("jobs.comparison")


def run(conf: Conf) -> str:
    lake = Lake.from_conf(conf)
    cfg, fcfg = conf.comparison, conf.familiarity
    if not cfg.fit or not cfg.predict:
        raise ValueError("comparison.fit and comparison.predict must both name a vector set, "
                         "e.g. --fit embeddings@train --predict embeddings@test")
    fit_set, predict_set = vectors.resolve(lake, cfg.fit), vectors.resolve(lake, cfg.predict)
    started = time.perf_counter()
    with runs.track(lake, brain_key=cfg.brain_key, method="comparison", dataset=predict_set.dataset,
                    inputs={"fit": fit_set.run_id, "predict": predict_set.run_id}, config=conf.model_dump(),
                    policy=conf.runs) as run:
        chosen = {}
        for role, vset in (("fit", fit_set), ("predict", predict_set)):
            rows = vectors.sample(vectors.members(lake, vset), fcfg.max_fit_samples, seed=fcfg.seed)
            chosen[role] = (rows, vectors.read_vectors(lake, vset.run_id, rows["sample_id"].combine_chunks()))
            run.metrics[f"{role}_samples"] = float(rows.num_rows)
        (fit_rows, fit_x), (predict_rows, predict_x) = chosen["fit"], chosen["predict"]
        labelled = fit_rows["label"].null_count == 0 and predict_rows["label"].null_count == 0
        options = dict(folds=cfg.folds, seed=fcfg.seed, **density_options(fcfg, seed=False))
        fit_labels, predict_labels = (rows["label"].to_numpy(zero_copy_only=False).astype(str)
                                      for rows in (fit_rows, predict_rows))
        try:
            with threadpool_limits(1):
                if labelled:
                    report = fam.compare_per_class(fit_x, fit_labels, predict_x, predict_labels, **options)
                    ratio, per_class = report.ratio, report.per_class
                else:
                    ratio, per_class = fam.compare(fit_x, predict_x, **options), {}
        except ValueError as err:
            raise ValueError(f"comparison of {fit_set.spec!r} with {predict_set.spec!r}: {err}") from None
        run.metrics["ratio"] = ratio
        labels = [None, *per_class]
        ratios = [ratio, *per_class.values()]
        table = pa.table({
            "run_id": [run.run_id] * len(labels), "brain_key": [cfg.brain_key] * len(labels),
            "label": pa.array(labels, pa.string()), "ratio": ratios, "verdict": [fam.verdict(r) for r in ratios],
        })
        run.write("familiarity_comparison", table)
    log.info("comparison: L(%s -> %s) = %.3f (%s) in %.1f s", fit_set.spec, predict_set.spec, ratio,
             fam.verdict(ratio), time.perf_counter() - started)
    return run.run_id


def print_comparison(conf: Conf, run_id: str, *, console=None) -> None:
    """L(fit → predict) overall and per class, from a comparison run's table."""
    from brain import sql
    from jobs.console import make_console, print_table

    console = console or make_console()
    table = sql.query(Lake.from_conf(conf), "SELECT coalesce(label, '(overall)') AS label, ratio, verdict "
                                       f"FROM familiarity_comparison WHERE run_id = '{run_id}' "
                                       "ORDER BY label IS NOT NULL, label")
    overall = table.slice(0, 1).to_pylist()[0]
    console.print(f"L({conf.comparison.fit} → {conf.comparison.predict}) = {overall['ratio']:.3f}: "
                  f"[bold]{overall['verdict']}[/bold]  (bands: < 0.6 huge gap, 0.6–0.8 small gap, "
                  "0.8–1.2 fine, > 1.2 gap)")
    if table.num_rows > 1:
        print_table(console, table)


JOB = Job(name="compare", engine="driver", help="dataset comparison L(fit → predict) with a verdict",
          reads=("embeddings", "samples"),
          writes=("familiarity_comparison",),
          run=run,
          options=(Option("--fit", "comparison.fit", "vector set NAME[@SPLIT]: an embeddings brain key or a "
                                                    "dataset name, optionally one split (e.g. embeddings@train)"),
                   Option("--predict", "comparison.predict",
                          "vector set compared with the fit set (e.g. embeddings@test)")),
          report=print_comparison)


if __name__ == "__main__":
    JOB.main()
