"""The job skeleton: each job module declares itself once as ``JOB = Job(...)``.

The ``brain`` verbs, ``brain submit`` and the ``python -m jobs.NAME`` entry points are all
built from these declarations (``JOB_MODULES`` lists the modules), so a new job is one
module with a ``run(conf) -> run_id`` function, its ``JOB`` and a line in ``JOB_MODULES``.
The Python API (``brain.open_lake``) finds them through :func:`load_jobs`, declared in
pyproject.toml as the ``lakebrain.jobs`` entry point, since the library never imports ``jobs``.

Engines decide how ``brain submit`` sends a job: ``ray`` jobs through the Ray Jobs API,
``spark`` jobs through spark-submit, ``driver`` jobs (no engine of their own) through the Ray
Jobs API when ``submit.ray_address`` is known, else spark-submit (see ``jobs.submit``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

from brain.config import Conf, load_conf

Engine = Literal["ray", "spark", "driver"]

# Every job, in the order `brain --help` lists them.
JOB_MODULES = (
    "jobs.demo", "jobs.ingest", "jobs.embed", "jobs.register_embeddings", "jobs.apply_model",
    "jobs.patch_embeddings", "jobs.neighbors", "jobs.uniqueness", "jobs.duplicates", "jobs.leaks", "jobs.unique",
    "jobs.register_predictions", "jobs.linear_probe", "jobs.hardness", "jobs.label_quality",
    "jobs.detection_mistakenness", "jobs.walkthrough",
    "jobs.familiarity", "jobs.comparison", "jobs.visualization", "jobs.scan",
)
# Verbs that are not their module's name with "-" for "_".
VERB_MODULES = {"compare": "jobs.comparison", "visualize": "jobs.visualization"}


@dataclass(frozen=True)
class Option:
    """A job's own command-line option: sets one config field (``section.field``, or a top-level field)."""

    flag: str
    field: str
    help: str
    clears: tuple[str, ...] = ()  # fields reset to None when this option is given (alternative sources)
    parse: Callable[[str], Any] | None = None  # the command-line text to the field's value (default: as is)


def comma_list(text: str) -> list[str]:
    """``a,b,c`` → ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class Job:
    """What a job is: its verb, the engine it runs on, what it reads and writes, and its ``run``."""

    name: str  # the `brain` verb
    engine: Engine
    help: str
    reads: tuple[str, ...]  # lake tables it reads (schemas.TABLES names)
    writes: tuple[str, ...]  # lake tables it writes
    run: Callable[[Conf], str]
    options: tuple[Option, ...] = ()
    report: Callable[[Conf, str], None] | None = None  # prints a summary after the run succeeded

    def __post_init__(self):
        if self.engine not in get_args(Engine):
            raise ValueError(f"job {self.name!r}: engine must be ray, spark or driver, not {self.engine!r}")

    @property
    def module(self) -> str:
        """The module holding the job, ``jobs.NAME`` (as imported by ``load_jobs``)."""
        return self.run.__module__

    @property
    def script(self) -> Path:
        """The job's file, the main program spark-submit is given."""
        return Path(__file__).resolve().parent.parent.joinpath(*self.module.split(".")).with_suffix(".py")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_conf_args(parser)
        for option in self.options:
            parser.add_argument(option.flag, dest=_dest(option), help=option.help, type=option.parse,
                                metavar=option.field.rpartition(".")[2].upper())

    def conf(self, args: argparse.Namespace) -> Conf:
        """The config file and ``--set`` overrides, then this job's own options."""
        conf = load_conf(args.conf, args.overrides)
        given = {option: getattr(args, _dest(option)) for option in self.options}
        given = {option: value for option, value in given.items() if value is not None}
        if not given:
            return conf
        data = conf.model_dump()
        for option in given:
            for cleared in option.clears:
                _set_field(data, cleared, None)
        for option, value in given.items():
            _set_field(data, option.field, value)
        return Conf.model_validate(data)

    def execute(self, args: argparse.Namespace) -> int:
        """Run the job with parsed arguments in this process (engines left running); returns the exit status.

        What `brain NAME` and `python -m jobs.NAME` both do before ``exit_process``.
        """
        from brain.errors import reporting_failures

        setup_logging()

        def load_and_run() -> int:
            conf = self.conf(args)
            run_id = self.run(conf)
            print(f"run {run_id} succeeded; lake: {_lake_location(conf.lake)}", flush=True)
            if self.report is not None:
                self.report(conf, run_id)
            return 0

        return reporting_failures(load_and_run, debug=getattr(args, "debug", False))

    def main(self, argv: list[str] | None = None) -> NoReturn:
        """The process ``python -m jobs.NAME [--conf FILE] [--set k=v] [job options]`` (also under spark-submit)."""
        parser = argparse.ArgumentParser(description=self.help)
        self.add_arguments(parser)
        parser.add_argument("--debug", action="store_true", help="show the traceback of expected failures too")
        exit_process(self.execute(parser.parse_args(argv)))


def exit_process(code: int) -> NoReturn:
    """End a command's process: the engines it started or joined are stopped first, then ``sys.exit``.

    Both `brain ...` and `python -m jobs.NAME` end here, so they stop the same way.
    """
    from jobs.engines import stop_engines

    try:
        stop_engines()
    finally:
        sys.exit(code)


def module_for(verb: str) -> str | None:
    """The module declaring the job ``verb``, found without importing any (None: no such job)."""
    module = VERB_MODULES.get(verb, "jobs." + verb.replace("-", "_"))
    return module if module in JOB_MODULES else None


def load_jobs(verbs: list[str] | None = None) -> dict[str, Job]:
    """Every job's declaration by verb (imports the job modules, not the engines); with ``verbs``, only
    those jobs' modules are imported (unknown verbs are left out): a `brain STEP` process pays for its
    own job's imports, not for all 21 modules' (about a second)."""
    modules = JOB_MODULES if verbs is None else [m for m in dict.fromkeys(map(module_for, verbs)) if m]
    jobs = {}
    for module in modules:
        job = importlib.import_module(module).JOB
        if job.name in jobs:
            raise ValueError(f"two jobs are named {job.name!r}: {jobs[job.name].module} and {module}")
        jobs[job.name] = job
    return jobs


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("py4j", "ray", "filelock", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_conf_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", help="YAML config (default: conf/local.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set neighbors.k=20 (repeatable)")


def _dest(option: Option) -> str:
    return "option_" + option.flag.lstrip("-").replace("-", "_")


def _set_field(data: dict[str, Any], field: str, value: Any) -> None:
    *sections, leaf = field.split(".")
    for section in sections:
        data = data[section]
    data[leaf] = value


def _lake_location(lake: str) -> str:
    return lake if "://" in lake else str(Path(lake).resolve())
