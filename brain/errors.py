"""Errors as people read them: plain text in the lake, one line with the fix at the command line.

* :func:`plain_text`: what is stored in the lake (``runs.error``, ``ingest_errors.reason``)
  is plain text: ANSI colour codes (Ray's and Spark's tracebacks carry them) and other
  control characters are removed, so a terminal or a web page shows the text and nothing
  a hostile file name smuggled in.
* :func:`expected_failure`: failures a user can fix (a config that does not validate, the
  scan lock held by another scan, a commit that lost to a concurrent writer, a refused
  filter, missing input) become one line saying what to do; the commands print it and
  exit 2, with the traceback only under ``--debug``. Anything else is a bug: traceback.
"""

from __future__ import annotations

import re
import sys
from typing import Callable

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks), then any other C0/C1 control
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

EXIT_EXPECTED = 2  # the exit code of a failure the message tells how to fix


def plain_text(text: str) -> str:
    """``text`` without ANSI escape sequences and control characters (newlines and tabs kept)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def one_line(text: str) -> str:
    return " ".join(plain_text(text).split())


def expected_failure(err: BaseException) -> str | None:
    """The one-line message (with the fix) of a failure the user can fix; None for anything else (a bug)."""
    from deltalake.exceptions import CommitFailedError

    from brain.config import ConfError
    from brain.lake import LakeConflictError
    from brain.runs import RunAbandonedError
    from brain.scan import ScanLockedError

    if isinstance(err, ScanLockedError):
        return one_line(f"{err}. Fix: wait for that scan to finish (or stop it); a dead one's lock is taken over")
    if isinstance(err, (CommitFailedError, LakeConflictError)):
        return one_line(f"another job wrote the same table at the same time and this commit lost ({err}). "
                        "Fix: run the command again")
    if isinstance(err, RunAbandonedError):
        return one_line(f"{err}. Fix: run the command again (this process stalled longer than runs.abandon_after_s)")
    if isinstance(err, ConfError):
        return one_line(f"{err}. Fix: correct the config file or the --set value")
    if isinstance(err, (ValueError, KeyError, FileNotFoundError, ImportError)):
        text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        return one_line(text)
    return None


def reporting_failures(command: Callable[[], int], *, debug: bool = False) -> int:
    """``command()``'s exit code; an expected failure prints its one line and gives :data:`EXIT_EXPECTED`.

    Anything else (a bug), and every failure under ``debug``, raises with its traceback.
    """
    try:
        return command()
    except Exception as err:
        message = expected_failure(err)
        if message is None or debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_EXPECTED

