"""The ``brain`` command: run jobs, manage runs, query the lake with SQL.

The job verbs (``brain embed``, ...) and ``brain submit JOB`` come from the jobs' own
declarations (``jobs.registry``); the other commands (sql, runs, lake, results, similar, plot, app, ...)
read the lake without an engine, and a command line that names one of them does not
import the job modules at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

import pyarrow as pa

from brain.config import ConfError, load_conf
from brain.lake import PLOTS_FOLDER, Lake
from jobs.console import make_console, print_table
from jobs.registry import Job, add_conf_args, exit_process, load_jobs, module_for


def _lake(args):
    from brain.lake import Lake

    if getattr(args, "lake", None):
        return Lake(args.lake)
    return Lake.from_conf(load_conf(args.conf, args.overrides))


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
    out = Path(args.out or lake.local_folder(PLOTS_FOLDER) / f"{args.key}.html")
    png = None if args.no_png else Path(args.png or out.with_suffix(".png"))
    for path in lake_plots.plot_run(lake, args.key, html_path=out, png_path=png, color_by=args.color_by,
                                    size_by=args.size_by, highlight=highlight, highlight_name=name):
        print(f"wrote {path}")
    return 0


def _cmd_submit(args) -> int:
    from jobs.submit import submit

    return submit(args.job, args.job.conf(args))


def _cmd_scan(args) -> int:
    if not args.plan:
        return args.job.execute(args)
    from jobs.scan import print_plan

    print_plan(args.job.conf(args))
    return 0


def _cmd_runs(args) -> int:
    from brain import runs

    lake, console = _lake(args), make_console()
    if args.action == "list":
        import pyarrow.compute as pc

        table = runs.list_runs(lake, method=args.method, history=args.all)
        if not args.all:  # replaced runs wait for `brain lake vacuum`; --all shows them
            table = table.filter(pc.is_in(table["status"], pa.array(["running", "succeeded", "failed",
                                                                               "abandoned"])))
        # inputs: stale when an input run was replaced since this run read it (runs.stale_runs)
        freshness = pc.if_else(table["stale"], "stale", "fresh")
        table = table.append_column("inputs", freshness)
        print_table(console, table.select(
            ["brain_key", "method", "dataset", "status", "current", "inputs", "started_at", "finished_at",
             "rows_written", "run_id", "executed_on", "submission_id"]))
    elif args.action == "info":
        info = runs.get_run(lake, args.key)
        info["config"] = json.loads(info["config"])
        console.print_json(json.dumps(info, default=str))
    elif args.action == "rename":
        renamed = runs.rename_run(lake, args.old, args.new)
        console.print(f"renamed {args.old} to {args.new} ({len(renamed)} run(s))")
    elif args.action == "view":
        return _write_result(runs.load_view(lake, args.key), args.format, args.out)
    elif args.action == "delete" and args.all:
        return _delete_all_runs(lake, args)
    elif args.action == "delete":
        if not args.key or args.dataset:
            raise ConfError("give a brain key or run id to delete, or --all [--dataset D] --yes (--dataset goes "
                            "with --all only)")
        run_id = runs.delete_run(lake, args.key)
        console.print(f"deleted run {run_id} ({args.key}) and its rows")
    return 0


def _delete_all_runs(lake: Lake, args) -> int:
    """`brain runs delete --all`: every run of --dataset, or of the whole lake without it; needs --yes."""
    from brain import runs

    if args.key:
        raise ConfError(f"give a key ({args.key!r}) or --all, not both")
    scope = f"dataset {args.dataset!r}" if args.dataset else "every dataset"
    deleted, running = runs.delete_runs(lake, dataset=args.dataset, dry_run=not args.yes)
    if not args.yes:
        raise ConfError(f"`runs delete --all` would delete all {len(deleted)} runs of {scope} in {lake.uri} with "
                        "their rows and files; nothing was deleted. Add --yes to confirm")
    print(f"deleted {len(deleted)} runs of {scope} with their rows and files"
          + (f"; {len(running)} running runs left alone (delete them once they end)" if running else ""))
    return 0


def _cmd_lake(args) -> int:
    from brain import runs

    conf = load_conf(args.conf, args.overrides)
    lake = Lake(args.lake) if args.lake else Lake.from_conf(conf)
    if args.action == "cleanup":
        report = runs.cleanup(lake, dry_run=args.dry_run, policy=conf.runs)
        verb = "would remove" if args.dry_run else "removed"
        print(f"cleanup of {lake.uri}: {verb} {len(report['staged_files'])} uncommitted staged files, "
              f"{len(report['heartbeats'])} heartbeat files of ended runs, the artifacts of "
              f"{len(report['artifacts'])} deleted, purged or unknown runs and {len(report['plots'])} plots of "
              "keys no run has")
        for kind, items in report.items():
            for item in items:
                print(f"  {kind}: {item}")
        return 0
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
    from jobs.registry import setup_logging

    setup_logging()
    index = write_report(_lake(args).uri, args.out, max_samples=args.max_samples, cache_dir=args.cache_dir)
    print(f"wrote {index} (open it in a browser; no server needed)")
    return 0


def _cmd_engines(args) -> int:
    from jobs import engines
    from jobs.registry import setup_logging

    setup_logging()
    if args.action == "up":
        engines.engines_up(load_conf(args.conf, args.overrides))
    elif args.action == "down":
        stopped = engines.engines_down()
        print("stopped " + ", ".join(stopped) if stopped else f"no engines recorded in {engines.state_file()}")
        return 0
    status = engines.engines_status()
    for name, engine in status.items():
        state = "answers" if engine["answers"] else "running, not answering" if engine["running"] else "gone"
        print(f"{name}: {engine['address']} (pid {engine['pid']}): {state}")
    if not status:
        print(f"no engines up (state file {engines.state_file()})")
    return 0 if all(engine["answers"] for engine in status.values()) else 1


def _cmd_run(args) -> int:
    """Several jobs in order in this process: the first Ray / Spark step starts or joins the engines, the
    later ones reuse them."""
    import time

    from jobs.registry import setup_logging

    jobs = load_jobs(args.steps)
    unknown = [step for step in args.steps if step not in jobs]
    if unknown:
        raise ConfError(f"brain run: no job named {', '.join(map(repr, unknown))}; jobs: {', '.join(load_jobs())}")
    setup_logging()
    conf = load_conf(args.conf, args.overrides)
    for step in args.steps:
        started = time.perf_counter()
        run_id = jobs[step].run(conf)
        print(f"{step}: run {run_id} succeeded in {time.perf_counter() - started:.1f} s", flush=True)
        if jobs[step].report is not None:
            jobs[step].report(conf, run_id)
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


def build_parser(jobs: dict[str, Job] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``jobs`` None: every job's declaration is loaded."""
    jobs = load_jobs() if jobs is None else jobs
    parser = argparse.ArgumentParser(prog="brain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of expected failures too (bad config, lock held, commit conflict)")

    def with_conf(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_conf_args(p)
        return p

    for job in jobs.values():
        job_p = sub.add_parser(job.name, help=f"{job.help} [{job.engine}]", description=job.help)
        job.add_arguments(job_p)
        job_p.set_defaults(func=job.execute)

    if "scan" in jobs:
        scan_p = sub.choices["scan"]
        scan_p.add_argument("--plan", action="store_true",
                            help="print what the scan would make again and why (input changed: old → new run id; "
                                 "incremental or full), run nothing")
        scan_p.set_defaults(func=_cmd_scan, job=jobs["scan"])

    submit_p = sub.add_parser("submit", help="send a job to a cluster: ray jobs through the Ray Jobs API, spark "
                                             "jobs through spark-submit, driver jobs through either",
                              description=_submit_description(jobs),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    submit_sub = submit_p.add_subparsers(dest="job_name", required=True, metavar="JOB")
    for job in jobs.values():
        job_p = submit_sub.add_parser(job.name, help=f"[{job.engine}] {job.help}", description=job.help)
        job.add_arguments(job_p)
        job_p.set_defaults(func=_cmd_submit, job=job)

    run_p = with_conf(sub.add_parser("run", help="several jobs in order in one process, sharing one Ray and one "
                                                 "Spark session (e.g. brain run neighbors uniqueness duplicates)"))
    run_p.add_argument("steps", nargs="+", metavar="STEP", help="job names (their options: --set SECTION.FIELD=V)")
    run_p.set_defaults(func=_cmd_run)

    eng_p = with_conf(sub.add_parser("engines", help="a local Ray head and Spark Connect server that stay up: "
                                                     "jobs join them instead of starting their own"))
    eng_p.add_argument("action", choices=["up", "down", "status"],
                       help="up: start them (with the config's ray and spark settings); down: stop what up "
                            "started; status: what is up and whether it answers (exit 1 if one does not)")
    eng_p.set_defaults(func=_cmd_engines)

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
    view = runs_sub.add_parser("view", help="the samples a run was computed on (its recorded sample filter)")
    view.add_argument("key", help="brain key (its current run) or run id")
    view.add_argument("--format", choices=["table", "csv", "json", "parquet"], default="table")
    view.add_argument("--out", help="file to write (csv/json default to stdout)")
    delete = runs_sub.add_parser("delete", help="a run with its rows and files; --all --yes: every run")
    delete.add_argument("key", nargs="?", help="brain key or run id")
    delete.add_argument("--all", action="store_true", help="every run of --dataset, or of the whole lake without it "
                                                            "(running runs are left alone); needs --yes")
    delete.add_argument("--dataset", help="with --all: only this dataset's runs")
    delete.add_argument("--yes", action="store_true", help="confirm --all")
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
    clean = lake_sub.add_parser("cleanup", help="remove orphans: uncommitted staged files of runs not running, "
                                                "heartbeats of ended runs, artifacts and plots of deleted or "
                                                "unknown runs (safe while jobs run)")
    clean.add_argument("--lake", help="lake folder or URI (default: the config's)")
    clean.add_argument("--dry-run", action="store_true", help="say what would be removed")
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
    query.add_argument("--id", action="append", help="sample id of the query (a patch id SAMPLE_ID#INDEX when the "
                                                     "index holds patches); repeat for the mean of several")
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


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._subparsers._group_actions for name in action.choices}


def _submit_description(jobs: dict[str, Job]) -> str:
    by_engine = {engine: [job.name for job in jobs.values() if job.engine == engine]
                 for engine in ("ray", "spark", "driver")}
    return ("Send JOB to a cluster (see cluster/README.md):\n"
            f"  ray jobs, through the Ray Jobs API at submit.ray_address: {', '.join(by_engine['ray'])}\n"
            f"  spark jobs, through spark-submit to spark.master: {', '.join(by_engine['spark'])}\n"
            f"  driver jobs (no engine), through the Ray Jobs API when submit.ray_address is set,\n"
            f"  else spark-submit: {', '.join(by_engine['driver'])}")


def main(argv: list[str] | None = None) -> int:
    """Run one `brain` command in this process (engines left running); returns the exit status."""
    from brain.errors import reporting_failures

    argv = sys.argv[1:] if argv is None else argv
    # A command that is no job (sql, runs, ...) does not need the job modules: their imports cost seconds.
    parser = build_parser({})
    if argv and module_for(argv[0]):  # one job: only its module is imported
        parser = build_parser(load_jobs(argv[:1]))
    elif not argv or argv[0] == "submit" or argv[0] not in _commands(parser):
        parser = build_parser()
    args = parser.parse_args(argv)
    return reporting_failures(lambda: args.func(args), debug=args.debug)


def console() -> NoReturn:
    """The `brain` console script: one command, then the process ends like a job's (``exit_process``)."""
    exit_process(main())


if __name__ == "__main__":
    console()
