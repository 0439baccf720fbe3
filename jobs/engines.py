"""Starting or joining the engines named by the config."""

from __future__ import annotations

import logging
import os
import socket
import sys

from brain.config import Conf

log = logging.getLogger(__name__)


def ray_init(conf: Conf):
    """Join the configured Ray cluster (or RAY_ADDRESS), else start a local Ray."""
    import ray

    code = use_code_paths(conf)
    if ray.is_initialized():
        return ray
    # Ray's tqdm support replaces builtins.print with a Python function, which numba cannot compile:
    # UMAP fits above 4,096 rows (pynndescent) then fail to compile in a process that started Ray.
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    address = conf.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(include_dashboard=conf.ray.include_dashboard, log_to_driver=True,
                  logging_level=logging.WARNING, configure_logging=True)
    if code:  # local folders can only be uploaded for the whole job, when it connects
        kwargs["runtime_env"] = {"py_modules": code}
    if address:
        ray.init(address=address, **kwargs)
    else:
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        ray.init(num_cpus=conf.ray.num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray


def use_code_paths(conf: Conf) -> list[str]:
    """Put ``code_paths`` (your package folders) on this process's ``sys.path``; returns them, resolved."""
    from pathlib import Path

    folders = [Path(p).expanduser().resolve() for p in conf.code_paths]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"code_paths: {folder} is not a folder (give your package's folder)")
        if str(folder.parent) not in sys.path:
            sys.path.insert(0, str(folder.parent))
    return [str(f) for f in folders]


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
    return spark


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
