"""Progress of long steps: counts, rate and ETA, as a bar on a terminal and as log lines elsewhere.

On a terminal (stderr is a TTY) a step shows a tqdm bar. Anywhere else (CI, ``ray job
submit`` logs, cron) it logs a plain line every ``interval`` seconds (default
``$LAKEBRAIN_PROGRESS_INTERVAL`` or 10 s) and one when it ends::

    embed: 1200/20000 samples (6%), 340.2 samples/s, ETA 55 s
    embed: done, 20000 samples in 58.8 s (340.1 samples/s)

Three ways in: :class:`Progress` (``update``/``set`` by hand), :func:`iterate` (wrap an
iterable) and :func:`poll` (a background thread reads a counter, e.g. shards an engine
has staged or tasks a Spark stage has finished, while the driver waits on the engine).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

log = logging.getLogger("brain.progress")

T = TypeVar("T")
INTERVAL_ENV = "LAKEBRAIN_PROGRESS_INTERVAL"


def default_interval() -> float:
    return float(os.environ.get(INTERVAL_ENV, 10.0))


def on_terminal() -> bool:
    return sys.stderr.isatty()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Progress of one step towards ``total`` (None: unknown) ``unit``; a context manager that closes itself."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "items", *, interval: float | None = None,
                 terminal: bool | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self.interval = default_interval() if interval is None else interval
        self.started = self._last_line = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False
        self._bar = None
        if on_terminal() if terminal is None else terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=f" {unit}", dynamic_ncols=True, file=sys.stderr)

    def line(self) -> str:
        """``desc: done/total unit (pct), rate unit/s, ETA …`` as of now."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.1f} {self.unit}/s"
        if self.total and rate > 0:
            text += f", ETA {_duration(max(self.total - self.done, 0) / rate)}"
        return text

    def set(self, done: int) -> None:
        """Report ``done`` units finished in all (a counter read from outside)."""
        with self._lock:
            if self._closed:
                return
            if self._bar is not None:
                self._bar.update(done - self.done)
            self.done = done
            now = time.monotonic()
            if self._bar is None and now - self._last_line >= self.interval:
                self._last_line = now
                log.info(self.line())

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
                return
        elapsed = time.monotonic() - self.started
        log.info("%s: done, %d %s in %.1f s (%.1f %s/s)", self.desc, self.done, self.unit, elapsed,
                 self.done / max(elapsed, 1e-9), self.unit)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iterate(items: Iterable[T], *, desc: str, unit: str = "items", total: int | None = None) -> Iterator[T]:
    """``items`` one by one, with progress (``total`` from ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit) as progress:
        for item in items:
            yield item
            progress.update()


@contextlib.contextmanager
def poll(read: Callable[[], int], *, desc: str, total: int | None = None, unit: str = "items",
         every: float | None = None) -> Iterator[Progress]:
    """Show progress while the block runs by calling ``read()`` (units done so far) every ``every`` seconds.

    ``read`` runs on a background thread; an exception there ends the polling (logged), not the block.
    """
    progress = Progress(desc, total, unit)
    every = every if every is not None else (1.0 if progress._bar is not None else min(progress.interval, 5.0))
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                progress.set(read())
            except Exception as err:  # a counter that cannot be read must not fail the job it watches
                log.debug("%s: progress counter failed: %s", desc, err)
                return

    thread = threading.Thread(target=loop, name=f"progress-{desc}", daemon=True)
    thread.start()
    try:
        yield progress
        with contextlib.suppress(Exception):
            progress.set(read())
    finally:
        stop.set()
        thread.join(timeout=every + 1)
        progress.close()
