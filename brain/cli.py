"""The ``brain`` command: run jobs, manage runs, query the lake with SQL."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa

from brain.config import ConfError, load_conf
from brain.lake import Lake

JOBS = {
    "demo": "jobs.demo",
    "ingest": "jobs.ingest",
    "embed": "jobs.embed",
    "neighbors": "jobs.neighbors",
    "uniqueness": "jobs.uniqueness",
    "label-quality": "jobs.label_quality",
    "walkthrough": "jobs.walkthrough",
    "detection-mistakenness": "jobs.detection_mistakenness",
    "scan": "jobs.scan",
    "apply-model": "jobs.apply_model",
    "patch-embeddings": "jobs.patch_embeddings",
    "register-embeddings": "jobs.register_embeddings",
    "register-predictions": "jobs.register_predictions",
    "linear-probe": "jobs.linear_probe",
    "hardness": "jobs.hardness",
    "duplicates": "jobs.duplicates",
    "unique": "jobs.unique",
    "leaks": "jobs.leaks",
    "familiarity": "jobs.familiarity",
    "compare": "jobs.comparison",
    "visualize": "jobs.visualization",
}


def print_table(console, table: pa.Table, *, max_rows: int = 200) -> None:
    from rich.table import Table

    view = Table()
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        view.add_row(*(_cell(v) for v in row.values()))
    console.print(view)
    if table.num_rows > max_rows:
        console.print(f"… {table.num_rows - max_rows} more rows (use --format csv)")


def make_console():
    """A rich console; wide enough for tables when the output is not a terminal."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _cell(value) -> str:
    import datetime as dt

    if value is None or value == []:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return ", ".join(f"{k}={v}" for k, v in value)
    return str(value)


def _lake(args):
    from brain.lake import Lake

    if getattr(args, "lake", None):
        return Lake(args.lake)
    return Lake(load_conf(args.conf, args.overrides).lake)


def _cmd_job(args) -> int:
    import importlib

    from jobs._entry import setup_logging

    setup_logging()
    conf = load_conf(args.conf, args.overrides)
    if args.command == "ingest":
        updates = {k: v for k, v in dict(source=args.source, manifest=args.manifest, split=args.split).items() if v}
        if updates:
            conf.ingest = conf.ingest.model_copy(update={"source": None, "manifest": None, **updates})
        if args.dataset:
            conf.dataset = args.dataset
    if args.command == "register-embeddings":
        updates = {k: v for k, v in dict(file=args.file, ids_file=args.ids, samples_column=args.samples_column,
                                         brain_key=args.brain_key).items() if v}
        conf.register_embeddings = conf.register_embeddings.model_copy(update=updates)
    if args.command == "register-predictions":
        updates = {k: v for k, v in dict(file=args.file, ids_file=args.ids, classes_file=args.classes_file,
                                         brain_key=args.brain_key).items() if v}
        if args.classes:
            updates["classes"] = args.classes.split(",")
        conf.register_predictions = conf.register_predictions.model_copy(update=updates)
    if args.command == "visualize":
        conf.visualization = conf.visualization.model_copy(update={k: v for k, v in dict(
            where=args.where, points=args.points, points_ids=args.points_ids).items() if v})
    if args.command == "compare":
        conf.comparison = conf.comparison.model_copy(
            update={k: v for k, v in dict(fit=args.fit, predict=args.predict).items() if v})
    run_id = importlib.import_module(JOBS[args.command]).run(conf)
    print(f"run {run_id} succeeded; lake: {Path(conf.lake).resolve() if '://' not in conf.lake else conf.lake}")
    if args.command == "compare":
        print_comparison(make_console(), conf, run_id)
    return 0


def print_comparison(console, conf, run_id: str) -> None:
    """L(fit → predict) overall and per class, from a comparison run's table."""
    from brain import sql
    from brain.lake import Lake

    table = sql.query(Lake(conf.lake), "SELECT coalesce(label, '(overall)') AS label, ratio, verdict "
                                       f"FROM familiarity_comparison WHERE run_id = '{run_id}' "
                                       "ORDER BY label IS NOT NULL, label")
    overall = table.slice(0, 1).to_pylist()[0]
    console.print(f"L({conf.comparison.fit} → {conf.comparison.predict}) = {overall['ratio']:.3f}: "
                  f"[bold]{overall['verdict']}[/bold]  (bands: < 0.6 huge gap, 0.6–0.8 small gap, "
                  "0.8–1.2 fine, > 1.2 gap)")
    if table.num_rows > 1:
        print_table(console, table)


def _cmd_plot(args) -> int:
    from brain import lake_plots

    lake = _lake(args)
    sources = [s for s in (args.highlight_sql, args.highlight_file, args.unique) if s]
    if len(sources) > 1:
        raise ConfError("give at most one of --highlight-sql, --highlight-file, --unique")
    highlight, name = [], "highlighted"
    if args.unique:
        from brain.schemas import TABLES

        if "unique" not in TABLES:
            raise ConfError("this lake has no `unique` table; pass the ids with --highlight-sql or --highlight-file")
        from brain import runs

        run_id = runs.latest_succeeded(lake, args.unique)["run_id"]
        highlight, name = lake_plots.highlight_ids(
            lake, query=f"SELECT sample_id FROM \"unique\" WHERE run_id = '{run_id}'"), "unique"
    elif args.highlight_sql or args.highlight_file:
        highlight = lake_plots.highlight_ids(lake, query=args.highlight_sql, path=args.highlight_file)
    out = Path(args.out or Path(lake.uri) / "plots" / f"{args.key}.html")
    png = None if args.no_png else Path(args.png or out.with_suffix(".png"))
    for path in lake_plots.plot_run(lake, args.key, html_path=out, png_path=png, color_by=args.color_by,
                                    size_by=args.size_by, highlight=highlight, highlight_name=name):
        print(f"wrote {path}")
    return 0


def _cmd_submit(args) -> int:
    from jobs.submit import submit

    return submit(args.job, load_conf(args.conf, args.overrides))


def _cmd_runs(args) -> int:
    from brain import runs

    lake, console = _lake(args), make_console()
    if args.action == "list":
        import pyarrow.compute as pc

        table = runs.list_runs(lake, method=args.method, history=args.all)
        if not args.all:  # replaced runs wait for `brain lake vacuum`; --all shows them
            table = table.filter(pc.is_in(table["status"], pa.array(["running", "succeeded", "failed",
                                                                               "abandoned"])))
        print_table(console, table.select(
            ["brain_key", "method", "dataset", "status", "current", "started_at", "finished_at", "rows_written",
             "run_id", "executed_on", "submission_id"]))
    elif args.action == "info":
        info = runs.get_run(lake, args.key)
        info["config"] = json.loads(info["config"])
        console.print_json(json.dumps(info, default=str))
    elif args.action == "rename":
        renamed = runs.rename_run(lake, args.old, args.new)
        console.print(f"renamed {args.old} to {args.new} ({len(renamed)} run(s))")
    elif args.action == "delete":
        run_id = runs.delete_run(lake, args.key)
        console.print(f"deleted run {run_id} ({args.key}) and its rows")
    return 0


def _cmd_lake(args) -> int:
    from brain import runs

    conf = load_conf(args.conf, args.overrides)
    lake = Lake(args.lake) if args.lake else Lake(conf.lake)
    retention = conf.runs.retention_hours if args.retention_hours is None else args.retention_hours
    report = runs.vacuum(lake, retention_hours=retention, dry_run=args.dry_run, policy=conf.runs)
    verb = "would remove" if args.dry_run else "removed"
    print(f"vacuum of {lake.uri} (retention {retention:g} h): {verb} the rows of {len(report['purged_runs'])} "
          f"replaced or failed runs, the staged files of {len(report['removed_staging'])} purged runs, and "
          f"{report['removed_files']} unreferenced table files")
    return 0


def _cmd_models(args) -> int:
    from brain.models import ZOO, available_models, get_model

    console = make_console()
    if args.action == "list":
        rows = [dict(name="thumbnail", task="embeddings", embedding_dim=get_model("thumbnail").embedding_dim, packages="",
                     weights="none (built in; the default model)")]
        rows += [dict(name=e.name, task=e.task, embedding_dim=e.embedding_dim, packages=", ".join(e.packages),
                      weights=e.weights_file) for e in ZOO.values()]
        print_table(console, pa.Table.from_pylist(rows))
        console.print("also: a TorchScript (.pt/.ts) or ONNX (.onnx) file path as the model name")
    elif args.name in ZOO:
        console.print_json(json.dumps(ZOO[args.name].info()))
    elif args.name in available_models():
        console.print_json(json.dumps(get_model(args.name).describe()))
    else:
        raise ValueError(f"unknown model {args.name!r}; available: {available_models()}")
    return 0


def _cmd_results(args) -> int:
    """A run's results as rows (what brain.results.load_results returns, as a table)."""
    from brain import results

    loaded = results.load_results(_lake(args), args.key)
    if isinstance(loaded, dict):  # several tables: pick one
        if args.table not in loaded:
            raise ConfError(f"run {args.key!r} has tables {sorted(loaded)}: choose one with --table")
        loaded = loaded[args.table]
    elif isinstance(loaded, results.PredictionsResults):
        loaded = loaded.rows
    elif isinstance(loaded, results.FamiliarityResults):
        loaded = loaded.extremes if args.table == "familiarity_extremes" else loaded.scores
    elif not isinstance(loaded, pa.Table):
        raise ConfError(f"run {args.key!r} holds a FAISS index, not rows: query it with `brain similar --key {args.key}`")
    return _write_result(loaded, args.format, args.out)


def _cmd_sql(args) -> int:
    lake = _lake(args)
    if args.engine == "spark":
        from jobs.engines import spark_session
        from jobs.spark_lake import register_tables

        spark = spark_session(load_conf(args.conf, args.overrides))
        register_tables(spark, lake, history=args.all_runs)
        table = spark.sql(args.query).toArrow()
    else:
        from brain import sql

        table = sql.query(lake, args.query, history=args.all_runs, allow_files=args.allow_files)
    return _write_result(table, args.format, args.out)


def _cmd_similar(args) -> int:
    import numpy as np

    from brain.similarity import similar
    from jobs.engines import use_code_paths

    vector = None
    if args.vector:
        vector = np.load(args.vector) if args.vector.endswith(".npy") else np.loadtxt(args.vector, delimiter=",")
    use_code_paths(load_conf(args.conf, args.overrides))  # a user model's text tower is imported here
    table = similar(_lake(args), args.key, sample_id=args.id, vector=vector, text=args.text, k=args.k,
                    reverse=args.reverse, where=args.where, save_as=args.save_as)
    return _write_result(table, args.format, args.out)


def _cmd_app(args) -> int:
    from brain.app import serve

    serve(_lake(args).uri, host=args.host, port=args.port, cache_dir=args.cache_dir)
    return 0


def _cmd_report(args) -> int:
    from brain.app import write_report
    from jobs._entry import setup_logging

    setup_logging()
    index = write_report(_lake(args).uri, args.out, max_samples=args.max_samples, cache_dir=args.cache_dir)
    print(f"wrote {index} (open it in a browser; no server needed)")
    return 0


def _write_result(table: pa.Table, fmt: str, out: str | None) -> int:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt == "table":
        print_table(make_console(), table)
    elif fmt == "parquet":
        if not out:
            raise ConfError("--format parquet needs --out FILE")
        pq.write_table(table, out)
    elif fmt == "csv":
        sink = out or sys.stdout.buffer
        pacsv.write_csv(table, sink)
    elif fmt == "json":
        text = "\n".join(json.dumps(row, default=str) for row in table.to_pylist()) + "\n"
        Path(out).write_text(text) if out else sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brain", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of expected failures too (bad config, lock held, commit conflict)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_conf(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--conf", help="YAML config (default: conf/local.yaml)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set neighbors.k=20")
        return p

    for name, help_text in (("demo", "digits end to end on the embedded default"),
                            ("embed", "embeddings on Ray Data"),
                            ("neighbors", "FAISS kNN graph on Ray"),
                            ("uniqueness", "uniqueness on Spark"),
                            ("label-quality", "hardness and mistakenness of a predictions run (+ Spark per-class tables)"),
                            ("hardness", "hardness (entropy of the logits) of a predictions run; needs no labels"),
                            ("linear-probe", "out-of-fold logistic regression on an embeddings run → predictions"),
                            ("walkthrough", "the label-mistake walkthrough on the digits"),
                            ("detection-mistakenness", "ground-truth boxes vs a detector's predictions"),
                            ("scan", "incremental scan of the dataset's sources (what a scheduler runs)"),
                            ("duplicates", "near or exact duplicate groups on Spark"),
                            ("unique", "a unique (k-center) subset of n samples"),
                            ("leaks", "duplicates across splits on Spark"),
                            ("familiarity", "fit a familiarity model on embeddings, score samples on Spark")):
        with_conf(sub.add_parser(name, help=help_text)).set_defaults(func=_cmd_job)
    viz_p = with_conf(sub.add_parser("visualize", help="2-D/3-D map of embeddings (umap|tsne|pca) on Ray"))
    viz_p.add_argument("--where", help="SQL condition over samples: map only that subset (FiftyOne's use_view)")
    viz_p.add_argument("--points", help="register precomputed coordinates instead: .parquet (sample_id, points) "
                                        "or .npy [N, 2|3] with --points-ids")
    viz_p.add_argument("--points-ids", help="for .npy points: a text file, one sample id per line")
    viz_p.set_defaults(func=_cmd_job)
    cmp_p = with_conf(sub.add_parser("compare", help="dataset comparison L(fit → predict) with a verdict"))
    cmp_p.add_argument("--fit", help="vector set NAME[@SPLIT]: an embeddings brain key or a dataset name, "
                                     "optionally one split (e.g. embeddings@train)")
    cmp_p.add_argument("--predict", help="vector set compared with the fit set (e.g. embeddings@test)")
    cmp_p.set_defaults(func=_cmd_job)
    plot_p = with_conf(sub.add_parser("plot", help="HTML + PNG scatter of a visualization run"))
    plot_p.add_argument("key", help="brain key of a visualization run")
    plot_p.add_argument("--lake", help="lake folder or URI (default: the config's)")
    plot_p.add_argument("--color-by", help="samples column (label, split...) or TABLE[.COLUMN][@KEY], "
                                           "e.g. uniqueness, familiarity.percentile")
    plot_p.add_argument("--size-by", help="numeric column, same forms as --color-by")
    plot_p.add_argument("--out", help="HTML file (default: LAKE/plots/KEY.html)")
    plot_p.add_argument("--png", help="PNG file (default: the HTML's path with .png)")
    plot_p.add_argument("--no-png", action="store_true", help="write the HTML only")
    plot_p.add_argument("--highlight-sql", help="SQL whose first column holds sample ids to outline")
    plot_p.add_argument("--highlight-file", help="file of sample ids (one per line) to outline")
    plot_p.add_argument("--unique", metavar="KEY", help="outline the samples of a `unique` table run")
    plot_p.set_defaults(func=_cmd_plot)
    ing = with_conf(sub.add_parser("ingest", help="register a dataset's images"))
    ing.add_argument("--source", help="folder in class-per-subfolder layout")
    ing.add_argument("--manifest", help="CSV or Parquet manifest with a uri column")
    ing.add_argument("--split", help="split for samples whose source names none")
    ing.add_argument("--dataset", help="dataset name (default: the config's)")
    ing.set_defaults(func=_cmd_job)

    submit_p = with_conf(sub.add_parser("submit", help="send a job to a Ray cluster (Jobs API) or Spark (spark-submit)"))
    submit_p.add_argument("job", help="ingest, embed, neighbors, scan, demo (Ray) or uniqueness (Spark)")
    submit_p.set_defaults(func=_cmd_submit)
    for name, help_text in (("apply-model", "predictions (labels, confidence, logits, detections) on Ray Data"),
                            ("patch-embeddings", "embeddings of object patches (boxes) on Ray Data")):
        with_conf(sub.add_parser(name, help=help_text)).set_defaults(func=_cmd_job)
    reg = with_conf(sub.add_parser("register-embeddings", help="store embeddings computed elsewhere as a run"))
    reg.add_argument("--file", help=".parquet (sample_id, vector), .npz (sample_id, vector) or .npy (with --ids)")
    reg.add_argument("--ids", help="for .npy: a text file, one sample id per line")
    reg.add_argument("--samples-column", help="a samples column or attributes field holding the vectors")
    reg.add_argument("--brain-key", help="brain key of the run (default: register_embeddings.brain_key)")
    reg.set_defaults(func=_cmd_job)
    regp = with_conf(sub.add_parser("register-predictions", help="store a model's predictions computed elsewhere"))
    regp.add_argument("--file", help=".parquet/.csv (sample_id or uri; label, confidence, logits, detections) "
                                     "or .npy logits [N, C] (with --ids)")
    regp.add_argument("--ids", help="for .npy: a text file, one sample id per line")
    regp.add_argument("--classes", help="class names in logit order, comma-separated")
    regp.add_argument("--classes-file", help="class names in logit order, one per line")
    regp.add_argument("--brain-key", help="brain key of the run (default: register_predictions.brain_key)")
    regp.set_defaults(func=_cmd_job)
    models_p = sub.add_parser("models", help="the model zoo")
    models_sub = models_p.add_subparsers(dest="action", required=True)
    models_sub.add_parser("list")
    models_sub.add_parser("info").add_argument("name")
    models_p.set_defaults(func=_cmd_models)

    runs_p = with_conf(sub.add_parser("runs", help="the run catalog"))
    runs_p.add_argument("--lake", help="lake folder or URI (default: the config's)")
    runs_sub = runs_p.add_subparsers(dest="action", required=True)
    lst = runs_sub.add_parser("list", help="current, running and failed runs")
    lst.add_argument("--method")
    lst.add_argument("--all", action="store_true", help="also replaced (superseded), deleted and purged runs")
    runs_sub.add_parser("info").add_argument("key", help="brain key or run id")
    runs_sub.add_parser("delete").add_argument("key", help="brain key or run id")
    ren = runs_sub.add_parser("rename")
    ren.add_argument("old", help="brain key to rename")
    ren.add_argument("new", help="new brain key (must not exist)")
    runs_p.set_defaults(func=_cmd_runs)

    lake_p = with_conf(sub.add_parser("lake", help="lake maintenance"))
    lake_sub = lake_p.add_subparsers(dest="action", required=True)
    vac = lake_sub.add_parser("vacuum", help="remove replaced runs' rows and unreferenced files (safe while jobs run)")
    vac.add_argument("--lake", help="lake folder or URI (default: the config's)")
    vac.add_argument("--retention-hours", type=float, help="keep what was replaced less than this long ago "
                                                           "(default: runs.retention_hours)")
    vac.add_argument("--dry-run", action="store_true", help="say what would be removed")
    lake_p.set_defaults(func=_cmd_lake)

    res_p = with_conf(sub.add_parser("results", help="a run's results (FiftyOne's load_brain_results) as rows"))
    res_p.add_argument("key", help="brain key (its current run) or run id")
    res_p.add_argument("--table", help="for runs that write several tables (mistakenness, familiarity, ...): which")
    res_p.add_argument("--lake", help="lake folder or URI (default: the config's)")
    res_p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    res_p.add_argument("--out", help="file to write (csv/json default to stdout)")
    res_p.set_defaults(func=_cmd_results)
    sql_p = with_conf(sub.add_parser("sql", help="SQL over the lake's tables"))
    sql_p.add_argument("query")
    sql_p.add_argument("--lake", help="lake folder or URI (default: the config's)")
    sql_p.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb")
    sql_p.add_argument("--allow-files", action="store_true",
                       help="let the query read and write files (COPY ... TO for exports, read_csv); off by default: "
                            "queries see the lake's tables only")
    sql_p.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    sql_p.add_argument("--out", help="file to write (csv/json default to stdout)")
    sql_p.add_argument("--all-runs", action="store_true",
                       help="tables hold every stored run's rows, not only the current runs' (as TABLE_history does)")
    sql_p.set_defaults(func=_cmd_sql)

    sim = with_conf(sub.add_parser("similar", help="the samples nearest some samples, a vector or a text prompt"))
    sim.add_argument("--key", default="knn", help="brain key of the kNN run whose index to query")
    query = sim.add_mutually_exclusive_group(required=True)
    query.add_argument("--id", action="append", help="sample id of the query; repeat for the mean of several")
    query.add_argument("--vector", help="a .npy file or a comma-separated text file holding the query vector")
    query.add_argument("--text", help="a prompt, embedded by the text tower of the index's model (CLIP)")
    sim.add_argument("-k", type=int, default=15)
    sim.add_argument("--reverse", action="store_true", help="the least similar samples instead")
    sim.add_argument("--where", help="SQL condition over samples restricting the results, e.g. \"split = 'test'\"")
    sim.add_argument("--save-as", metavar="KEY", help="also save the result as a view run (SQL: similarity_views; "
                                                      "`brain runs` and load_view read it)")
    sim.add_argument("--lake", help="lake folder or URI (default: the config's)")
    sim.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    sim.add_argument("--out", help="file to write (csv/json default to stdout)")
    sim.set_defaults(func=_cmd_similar)

    app_p = with_conf(sub.add_parser("app", help="the lake browser: a local web app over the lake (read-only)"))
    app_p.add_argument("--lake", help="lake folder or URI (default: the config's)")
    app_p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    app_p.add_argument("--port", type=int, default=8765)
    app_p.add_argument("--cache-dir", help="thumbnail cache folder (default: ~/.cache/lakebrain/thumbnails/...)")
    app_p.set_defaults(func=_cmd_app)
    rep = with_conf(sub.add_parser("report", help="the lake browser's views as static HTML (no search)"))
    rep.add_argument("--lake", help="lake folder or URI (default: the config's)")
    rep.add_argument("--out", required=True, help="folder to write index.html and its files into")
    rep.add_argument("--max-samples", type=int, default=2000, help="samples the report's grid holds")
    rep.add_argument("--cache-dir", help="thumbnail cache folder")
    rep.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from brain.errors import reporting_failures

    args = build_parser().parse_args(argv)
    return reporting_failures(lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
