"""The demo: scikit-learn's digits (1,797 real labelled images) end to end on the embedded default.

    digits → PNG files in class folders (train/ and test/) → ingest → embeddings (Ray Data)
      → kNN graph (FAISS on Ray) → uniqueness (Spark) → near-duplicates (Spark) → leaks between
      train and test (Spark) → a unique subset of 100 → predictions with out-of-fold logits
      → the label-mistake walkthrough (jobs.walkthrough) → the 10 most and least unique samples
      → familiarity fit on train, every sample scored (Spark) → L(train → test) comparison
      → 2-D map (visualization.method, UMAP by default, on Ray) → plot under LAKE/plots/

UMAP's first run in a fresh environment compiles numba code (~60 s, cached on disk for later
runs, ~2 s then); `brain demo --set visualization.method=pca` skips it.

Every stage is its own job reading and writing the lake; the demo only runs them in order.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from brain.config import Conf
from brain.lake import Lake
from jobs.registry import Job

log = logging.getLogger("jobs.demo")

TOP_SQL = """
SELECT u.uniqueness, s.label, s.split, s.sample_id, s.uri
FROM uniqueness u JOIN samples s USING (sample_id)
WHERE u.brain_key = '{key}'
ORDER BY u.uniqueness {order}, s.sample_id LIMIT 10
"""
TRY_SQL = ("SELECT s.label, count(*) AS n, round(avg(u.uniqueness), 3) AS mean_uniqueness "
           "FROM uniqueness u JOIN samples s USING (sample_id) GROUP BY s.label ORDER BY mean_uniqueness")


def line(lake: Lake, query: str) -> str:
    """One SQL row as 'name value, …'."""
    from brain import sql

    return ", ".join(f"{k} {v}" for k, v in sql.query(lake, query).to_pylist()[0].items())


def run(conf: Conf) -> str:
    from brain import sql
    from brain import runs
    from brain import lake_plots
    from jobs import (comparison, duplicates, embed, familiarity, ingest, leaks, linear_probe, neighbors, unique,
                      uniqueness, visualization, walkthrough)
    from jobs.console import make_console, print_table
    from jobs.digits import write_digits

    console = make_console()
    lake = Lake(conf.lake)
    source = Path(lake.uri) / "raw" / conf.dataset
    timings: dict[str, float] = {}

    def stage(name: str, step):
        console.print(f"[bold]▶ {name}[/bold]")
        t0 = time.perf_counter()
        result = step()
        timings[name] = time.perf_counter() - t0
        console.print(f"  done in {timings[name]:.1f} s")
        return result

    n = stage("write digits as PNG", lambda: write_digits(source))
    console.print(f"  {n} images under {source}")
    conf = conf.model_copy(update={"ingest": conf.ingest.model_copy(update={"source": str(source), "manifest": None}),
                                   "scan": conf.scan.model_copy(update={"rerun": "follow"})})  # `brain scan` keeps it fresh
    stage("ingest", lambda: ingest.run(conf))
    stage("embeddings (Ray Data)", lambda: embed.run(conf))
    stage("kNN graph (FAISS on Ray)", lambda: neighbors.run(conf))
    run_id = stage("uniqueness (Spark)", lambda: uniqueness.run(conf))
    # Digits are 8×8: their thumbnails all lie within cosine distance 0.2 of each other, so the demo
    # takes as embedding candidates only the closest pairs (≤ 0.05), not every pair ≤ the default 0.5;
    # the blurred-thumbnail candidates (5 per sample) are verified as usual.
    dup_conf = conf.model_copy(update={"duplicates": conf.duplicates.model_copy(update={"candidate_thresh": 0.05})})
    stage("near-duplicates (Spark)", lambda: duplicates.run(dup_conf))
    console.print("  " + line(lake, "SELECT count(*) AS duplicates, count(DISTINCT group_id) AS groups "
                                    "FROM duplicates"))
    stage("leaks between splits (Spark)", lambda: leaks.run(conf))
    console.print("  " + line(lake, "SELECT count(*) AS leaked_duplicates, "
                                    "count(DISTINCT group_id) AS groups_across_splits FROM leaks"))
    stage("unique subset", lambda: unique.run(conf))
    console.print("  " + line(lake, "SELECT count(*) AS unique_samples, count(DISTINCT s.label) AS labels_covered "
                                    "FROM \"unique\" u JOIN samples s USING (sample_id)"))

    probe = stage("predictions with logits: logistic regression, out of fold", lambda: linear_probe.run(conf))
    console.print(f"  out-of-fold accuracy {dict(runs.get_run(lake, probe)['metrics'])['oof_accuracy']:.3f}; "
                  f"rows in `predictions` under brain key {conf.linear_probe.brain_key!r}")

    walk = stage(f"label-mistake walkthrough ({conf.walkthrough.noise_fraction:.0%} of labels flipped, "
                 f"dataset {conf.walkthrough.dataset!r})", lambda: walkthrough.run(conf))
    found = dict(runs.get_run(lake, walk)["metrics"])
    console.print(f"  {found['precision_at_k'] * found['flipped']:.0f} of the {found['flipped']:.0f} flipped labels are "
                  f"among the top {found['flipped']:.0f} mistakenness samples (precision@k {found['precision_at_k']:.3f}), "
                  f"AUROC {found['auroc']:.4f}; {found['flagged']:.0f} flagged as issues, "
                  f"{found['flagged_precision']:.1%} of them truly flipped")

    for title, order in (("most unique", "DESC"), ("least unique", "ASC")):
        table = sql.query(lake, TOP_SQL.format(key=conf.uniqueness.brain_key, order=order))
        console.print(f"\n[bold]10 {title} samples[/bold]")
        print_table(console, table)
    fam_conf = conf.model_copy(update={
        "familiarity": conf.familiarity.model_copy(update={"fit_split": "train"}),
        "comparison": conf.comparison.model_copy(update={"fit": f"{conf.embed.brain_key}@train",
                                                         "predict": f"{conf.embed.brain_key}@test"}),
        "visualization": conf.visualization.model_copy(update={"embeddings_key": conf.embed.brain_key})})
    stage("familiarity fit on train, scored (Spark)", lambda: familiarity.run(fam_conf))
    comparison_id = stage("comparison train → test", lambda: comparison.run(fam_conf))
    comparison.print_comparison(fam_conf, comparison_id, console=console)
    stage(f"{conf.visualization.method} map (Ray)", lambda: visualization.run(fam_conf))
    plot = Path(lake.uri) / "plots" / f"{conf.visualization.brain_key}.html"
    stage("plot", lambda: lake_plots.plot_run(
        lake, conf.visualization.brain_key, html_path=plot, png_path=plot.with_suffix(".png"), color_by="label",
        size_by=f"uniqueness@{conf.uniqueness.brain_key}"))
    console.print(f"  map: {plot} (and {plot.with_suffix('.png').name})")
    counts = sql.query(lake, f"SELECT (SELECT count(*) FROM samples WHERE dataset = '{conf.dataset}') AS samples, "
                             "(SELECT count(*) FROM uniqueness) AS uniqueness_rows").to_pylist()[0]
    console.print("\n[bold]stage timings[/bold]: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    console.print(f"[bold]lake[/bold]: {lake.uri}  ({counts['samples']} samples, "
                  f"{counts['uniqueness_rows']} uniqueness rows)")
    print(f"try:  brain sql \"{TRY_SQL}\"")
    print("      brain runs list")
    print("      brain sql \"SELECT split, kept_split, count(*) AS n FROM leaks GROUP BY ALL\"")
    print("      brain similar --id SAMPLE_ID -k 5 --where \"split = 'test'\"")
    print(f"      brain plot {conf.visualization.brain_key} --color-by familiarity.percentile --out map.html")
    return run_id


JOB = Job(name="demo", engine="ray", help="digits end to end on the embedded default",
          reads=(),
          writes=("samples", "ingest_errors", "embeddings", "neighbors", "uniqueness", "duplicates", "leaks", "unique", "predictions", "hardness", "mistakenness", "label_quality_classes", "label_confusion", "familiarity", "familiarity_extremes", "familiarity_comparison", "visualization"),
          run=run)


if __name__ == "__main__":
    JOB.main()
