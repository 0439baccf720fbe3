"""The command line every job shares: ``--conf FILE`` and ``--set section.field=value``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, NoReturn

from brain.config import Conf, load_conf
from brain.errors import reporting_failures


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("py4j", "ray", "filelock", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_conf_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", help="YAML job config (default: conf/local.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set neighbors.k=20 (repeatable)")


def job_main(run: Callable[[Conf], str], description: str, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    add_conf_args(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of expected failures too")
    args = parser.parse_args(argv)
    setup_logging()

    def load_and_run() -> int:
        conf = load_conf(args.conf, args.overrides)
        print(f"run {run(conf)} succeeded; lake: {conf.lake}")
        return 0

    return reporting_failures(load_and_run, debug=args.debug)


def exit_process(code: int) -> NoReturn:
    """End a job script's process with ``code``: engines stopped in order, output flushed, then ``os._exit``.

    The interpreter's own teardown is skipped on purpose: there, native thread pools (Arrow's,
    DuckDB's) intermittently abort with "terminate called without an active exception"
    (apache/arrow#34314, duckdb/duckdb#13904), which turned a job that had already committed
    its run into exit 134 under spark-submit.
    """
    from jobs.engines import stop_engines

    stop_engines()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
