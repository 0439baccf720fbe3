"""Starting or joining the engines named by the config."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

from brain import progress
from brain.config import Conf
from brain.plugins import use_code_paths

log = logging.getLogger(__name__)


def ray_init(conf: Conf):
    """Join the configured Ray cluster (or RAY_ADDRESS), else start a local Ray that listens on loopback only."""
    address = conf.ray.address or os.environ.get("RAY_ADDRESS")
    if not address:
        _ray_on_loopback()
    import ray

    code = use_code_paths(conf)
    if ray.is_initialized():
        return ray
    # Ray's tqdm support replaces builtins.print with a Python function, which numba cannot compile:
    # UMAP fits above 4,096 rows (pynndescent) then fail to compile in a process that started Ray.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    kwargs = dict(include_dashboard=conf.ray.include_dashboard, log_to_driver=True,
                  logging_level=logging.WARNING, configure_logging=True)
    if code:  # local folders can only be uploaded for the whole job, when it connects
        kwargs["runtime_env"] = {"py_modules": code}
    if address:
        ray.init(address=address, **kwargs)
    else:
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        ray.init(num_cpus=conf.ray.num_cpus, _node_ip_address="127.0.0.1", dashboard_host="127.0.0.1", **kwargs)
    ctx = ray.data.DataContext.get_current()
    # Ray Data's own bars on a terminal; elsewhere they would be noise, and brain.progress logs lines instead.
    ctx.enable_progress_bars = progress.on_terminal()
    ctx.print_on_execution_start = False
    return ray


def _ray_on_loopback() -> None:
    """Make a local Ray's node address loopback, so its servers (GCS, raylet, workers, agents) listen there.

    Ray turns a 127.0.0.1 node address into the machine's routable address unless "clusters" are
    off (ray._private.services.resolve_ip_for_localhost); ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    is that switch (the name is Ray's; it is read on every platform). The processes Ray starts
    inherit the variable; this process reads it when ``ray`` is first imported, or here.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def ray_get_with_progress(refs: list, *, desc: str, unit: str = "tasks") -> list:
    """``ray.get(refs)`` (results in their order), with progress as the tasks finish."""
    import ray

    pending = list(refs)
    with progress.Progress(desc, len(pending), unit) as bar:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            bar.update(len(ready))
    return ray.get(refs)


def ship_code_to_spark(spark, conf: Conf) -> None:
    """``code_paths`` zipped and added to the Spark session (as ``--py-files`` would), so workers import them.

    The archive is made byte for byte from the folder's files (fixed timestamps) and named by their hash:
    Spark refuses a second file of the same name with other bytes, and a changed package gets a new name.
    Python workers that already imported a package keep it: a changed package needs a new session.
    """
    import hashlib
    import tempfile
    import zipfile
    from pathlib import Path

    for folder in map(Path, use_code_paths(conf)):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        digest = hashlib.sha1()
        for path in files:
            digest.update(str(path.relative_to(folder.parent)).encode() + b"\0" + path.read_bytes())
        archive = Path(tempfile.gettempdir()) / f"lakebrain-code-{folder.name}-{digest.hexdigest()[:12]}.zip"
        if not archive.exists():
            partial = archive.with_suffix(f".{os.getpid()}.tmp")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in files:
                    zf.writestr(zipfile.ZipInfo(str(path.relative_to(folder.parent)), (1980, 1, 1, 0, 0, 0)),
                                path.read_bytes())
            partial.replace(archive)
        spark.sparkContext.addPyFile(str(archive))


def ray_where() -> str:
    import ray

    return f"ray={os.environ.get('RAY_ADDRESS') or 'local'} gpus={int(ray.cluster_resources().get('GPU', 0))} host={socket.gethostname()}"


def spark_session(conf: Conf):
    """The configured Spark session (local[*] by default, or the master spark-submit set)."""
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (the one with the project installed) unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(conf.spark.app_name)
    # Under spark-submit the JVM is already up with the master it was given.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    if not submitted:
        builder = builder.master(conf.spark.master)
    if not submitted and conf.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (builder.config("spark.driver.host", "127.0.0.1")
                   .config("spark.driver.bindAddress", "127.0.0.1"))
    for key, value in conf.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    watch_spark_stages(spark)
    return spark


_WATCHED: set[int] = set()


def watch_spark_stages(spark, *, every: float | None = None) -> None:
    """Show the progress (tasks done of each active stage) of every Spark job this session runs.

    A daemon thread polls ``statusTracker()`` for the session's life: a bar per stage on a terminal,
    periodic log lines elsewhere (:mod:`brain.progress`). It ends when the session stops.
    """
    import threading

    sc = spark.sparkContext
    if id(sc) in _WATCHED:
        return
    _WATCHED.add(id(sc))
    every = every if every is not None else (1.0 if progress.on_terminal() else min(progress.default_interval(), 5.0))

    def loop() -> None:
        stages: dict[int, progress.Progress] = {}
        tracker = sc.statusTracker()
        while True:
            time.sleep(every)
            try:
                active = {sid: tracker.getStageInfo(sid) for sid in tracker.getActiveStageIds()}
            except Exception:  # the session stopped: py4j's gateway is gone
                break
            for sid, info in active.items():
                if info is None:
                    continue
                if sid not in stages:
                    call = info.name.split(" at ")[0]  # e.g. "parquet at NativeMethodAccessorImpl.java:0"
                    label = f"spark stage {sid}" + ("" if call.startswith("$") else f" ({call})")
                    stages[sid] = progress.Progress(label, info.numTasks, "tasks")
                stages[sid].set(info.numCompletedTasks)
            for sid in [s for s in stages if s not in active]:
                finished = tracker.getStageInfo(sid)
                if finished is not None:
                    stages[sid].set(finished.numCompletedTasks)
                stages.pop(sid).close()
        for bar in stages.values():
            bar.close()
        _WATCHED.discard(id(sc))

    threading.Thread(target=loop, name="spark-stage-progress", daemon=True).start()


def stop_engines() -> None:
    """Stop the Ray and Spark sessions this process started or joined, if any."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


def spark_where(spark) -> str:
    return f"spark={spark.sparkContext.master} host={socket.gethostname()}"


def versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
