"""Starting or joining the engines named by the config, and engines that stay up between jobs.

A job joins, in this order: the cluster its config names (``ray.address`` / ``RAY_ADDRESS``,
``spark.remote``, a non-local ``spark.master``), else the local engines ``brain engines up``
recorded as up (:func:`recorded_engines`), else it starts its own local Ray / Spark session and
stops them when its process ends. The seconds spent starting or attaching are counted apart from
the job's work and stored in its run record (``engine_start_s``, ``work_s``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from brain import progress, runs
from brain.config import Conf
from brain.plugins import use_code_paths

log = logging.getLogger(__name__)

STATE_DIR_ENV = "LAKEBRAIN_STATE_DIR"  # where `brain engines up` records what it started (default ~/.cache/lakebrain)
LOOPBACK = "127.0.0.1"

# Seconds this process spent starting or attaching engines since its last run succeeded: a job starts
# or joins its engines just before its run, so a pipeline's later steps (engines already joined) count 0.
_unreported_start_s = 0.0


def _engine_start_metrics() -> dict[str, float]:
    global _unreported_start_s
    spent, _unreported_start_s = _unreported_start_s, 0.0
    return {"engine_start_s": round(spent, 3)}


runs.PROCESS_METRICS.append(_engine_start_metrics)


def _count_start(engine: str, how: str, started: float) -> None:
    global _unreported_start_s
    spent = time.perf_counter() - started
    _unreported_start_s += spent
    log.info("%s: %s in %.2f s", engine, how, spent)


_ray_joined: dict[str, str | None] = {}  # the address this process joined (none: it started its own Ray)


def ray_init(conf: Conf):
    """Join the configured Ray cluster (or RAY_ADDRESS, or the Ray `brain engines up` started), else start a
    local Ray that listens on loopback only."""
    address = conf.ray.address or os.environ.get("RAY_ADDRESS")
    recorded = None if address else recorded_engines().get("ray")
    if recorded:
        address = recorded["address"]
        # the head checks a token of its own (not ~/.ray's, which other Rays on this machine share)
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=recorded["token_file"])
    if not address or recorded:
        _ray_on_loopback()
    import ray

    code = use_code_paths(conf)
    if ray.is_initialized():
        return ray
    started = time.perf_counter()
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
    _ray_joined["address"] = address
    _count_start("ray", f"joined {address}" if address else "started a local Ray", started)
    return ray


def use_ray_data(ray) -> None:
    """Ray Data's settings, for the jobs that run a Ray Data pipeline (the others skip importing ray.data,
    about 0.3 s)."""
    ctx = ray.data.DataContext.get_current()
    # Ray Data's own bars on a terminal; elsewhere they would be noise, and brain.progress logs lines instead.
    ctx.enable_progress_bars = progress.on_terminal()
    ctx.print_on_execution_start = False


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
        if is_connect(spark):
            spark.addArtifacts(str(archive), pyfile=True)
        else:
            spark.sparkContext.addPyFile(str(archive))


def ray_where() -> str:
    import ray

    return f"ray={os.environ.get('RAY_ADDRESS') or _ray_joined.get('address') or 'local'} gpus={int(ray.cluster_resources().get('GPU', 0))} host={socket.gethostname()}"


def spark_session(conf: Conf):
    """The configured Spark session: a Spark Connect session to ``spark.remote`` (or to the server
    `brain engines up` started, when the config names a local master), else a classic session
    (local[*] by default, or the master spark-submit set).

    A Connect session has no ``sparkContext``: the jobs use DataFrame operations and ``mapInArrow`` only,
    and the server keeps the settings it was started with (``spark.conf`` applies to classic sessions).
    """
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (the one with the project installed) unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # Under spark-submit the JVM is already up with the master it was given.
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ
    remote = conf.spark.remote
    if not remote and not submitted and conf.spark.master.startswith("local"):
        remote = (recorded_engines().get("spark") or {}).get("remote")
    if remote:
        return _connect_session(remote)
    started = time.perf_counter()
    builder = SparkSession.builder.appName(conf.spark.app_name)
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
    _count_start("spark", f"started a {conf.spark.master} session" if not submitted else "joined spark-submit's",
                 started)
    return spark


_connect: dict[str, object] = {}  # Spark Connect sessions this process opened, by URL


def _connect_session(remote: str):
    """A Spark Connect session to ``remote`` (sc://host:port), opened once per process."""
    if remote in _connect:
        return _connect[remote]
    from pyspark.sql import SparkSession

    started = time.perf_counter()
    spark = SparkSession.builder.remote(remote).getOrCreate()
    spark.registerProgressHandler(_ConnectStageBars())
    _connect[remote] = spark
    _count_start("spark", f"joined Spark Connect {remote}", started)
    return spark


def is_connect(spark) -> bool:
    """Whether ``spark`` is a Spark Connect session (no ``sparkContext``, no RDDs)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


class _ConnectStageBars:
    """Stage progress of a Spark Connect session's jobs (what :func:`watch_spark_stages` shows for classic ones)."""

    def __init__(self):
        self.bars: dict[int, progress.Progress] = {}

    def __call__(self, stages, inflight_tasks: int, operation_id: str | None, done: bool, **_) -> None:
        for stage in stages or ():
            bar = self.bars.get(stage.stage_id)
            if bar is None and not stage.done:
                bar = self.bars[stage.stage_id] = progress.Progress(f"spark stage {stage.stage_id}", stage.num_tasks,
                                                                    "tasks")
            if bar is not None:
                bar.set(stage.num_completed_tasks)
                if stage.done:
                    self.bars.pop(stage.stage_id).close()
        if done:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()


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
    for remote in list(_connect):  # closes this client's session; the server stays up
        _connect.pop(remote).stop()
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


def spark_where(spark) -> str:
    if is_connect(spark):
        remote = next((url for url, session in _connect.items() if session is spark), "connect")
        return f"spark={remote} master={spark.conf.get('spark.master')} host={socket.gethostname()}"
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


# -- engines that stay up: `brain engines up | down | status` ----------------------------------------


class EngineStartError(RuntimeError):
    """An engine `brain engines up` started did not come up; the message holds the end of its log."""


def state_file() -> Path:
    """The file recording the engines `brain engines up` started: outside any lake, one per user (or per
    ``$LAKEBRAIN_STATE_DIR``, which tests use to keep theirs apart)."""
    folder = os.environ.get(STATE_DIR_ENV) or Path.home() / ".cache" / "lakebrain"
    return Path(folder) / "engines.json"


def _read_state() -> dict:
    try:
        return json.loads(state_file().read_text())
    except FileNotFoundError:
        return {}


def _write_state(state: dict) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(state, indent=2))
    partial.replace(path)  # readers see the old file or the new one, never half of one


def recorded_engines() -> dict[str, dict]:
    """The engines `brain engines up` recorded whose process still runs (``ray``, ``spark``)."""
    return {name: engine for name, engine in _read_state().items() if _engine_alive(name, engine)}


def _engine_alive(name: str, engine: dict) -> bool:
    try:
        if name == "ray":
            os.killpg(engine["pgid"], 0)
        else:
            os.kill(engine["pid"], 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _answers(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition("/")[2].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def engines_up(conf: Conf, *, timeout_s: float = 180.0) -> dict[str, dict]:
    """Start a Ray head and a Spark Connect server on loopback with the config's settings, unless the
    state file records them as running; returns what is up (as :func:`engines_status`)."""
    from concurrent.futures import ThreadPoolExecutor

    state = recorded_engines()
    starts = {"ray": _start_ray_head, "spark": _start_connect_server}
    missing = [name for name in starts if name not in state]
    with ThreadPoolExecutor(2) as pool:  # both at once: each mostly waits for its processes to start
        pending = {name: pool.submit(starts[name], conf, timeout_s) for name in missing}
    failures = []
    for name, future in pending.items():
        try:
            state[name] = future.result()
        except EngineStartError as err:
            failures.append(err)
    _write_state(state)  # what did start is recorded, so `down` stops it
    if failures:
        raise failures[0]
    return engines_status()


def _start_ray_head(conf: Conf, timeout_s: float) -> dict:
    started = time.perf_counter()
    temp = tempfile.mkdtemp(prefix="lbray", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}",
           f"--node-ip-address={LOOPBACK}", f"--dashboard-host={LOOPBACK}",
           f"--include-dashboard={str(conf.ray.include_dashboard).lower()}",
           # every port of its own: Ray's fixed defaults collide with other Rays on the machine
           f"--dashboard-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={temp}", "--disable-usage-stats"]
    if conf.ray.num_cpus:
        cmd.append(f"--num-cpus={conf.ray.num_cpus}")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN_PATH=str(token), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", RAY_TQDM_PATCH_PRINT="0")
    env.pop("RAY_ADDRESS", None)
    # its own process group: `down` stops the head's processes and the workers they start, nothing else
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = head.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out = ""
    engine = dict(address=f"{LOOPBACK}:{port}", pgid=head.pid, temp_dir=temp, token_file=str(token))
    if head.returncode != 0:
        _stop_ray(engine)
        raise EngineStartError(f"`ray start --head` failed (exit {head.returncode}): {out[-2000:]}")
    log.info("engines: Ray head at %s started in %.1f s", engine["address"], time.perf_counter() - started)
    return engine


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _start_connect_server(conf: Conf, timeout_s: float) -> dict:
    started = time.perf_counter()
    port = _free_port()
    folder = state_file().parent / f"spark-connect-{port}"  # its pid file and logs
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"spark.connect.grpc.binding.address": LOOPBACK, "spark.connect.grpc.binding.port": str(port),
                "spark.driver.host": LOOPBACK, "spark.driver.bindAddress": LOOPBACK, "spark.log.level": "WARN",
                **conf.spark.conf}
    cmd = ["bash", str(_spark_home() / "sbin" / "start-connect-server.sh"), "--master", conf.spark.master]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    env = dict(os.environ, SPARK_HOME=str(_spark_home()), SPARK_PID_DIR=str(folder), SPARK_LOG_DIR=str(folder),
               SPARK_IDENT_STRING="lakebrain", SPARK_LOCAL_IP=LOOPBACK, PYSPARK_PYTHON=sys.executable)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    pid_files = list(folder.glob("*.pid"))
    if out.returncode != 0 or not pid_files:
        raise EngineStartError(f"start-connect-server.sh failed (exit {out.returncode}): {out.stdout}{out.stderr}")
    engine = dict(remote=f"sc://{LOOPBACK}:{port}", pid=int(pid_files[0].read_text()), folder=str(folder))
    deadline = time.monotonic() + timeout_s
    while not _answers(engine["remote"]):  # the server listens once its Spark session is up
        if time.monotonic() > deadline or not _engine_alive("spark", engine):
            logs = "".join(p.read_text()[-2000:] for p in folder.glob("*.out"))
            _stop_connect_server(engine)
            raise EngineStartError(f"the Spark Connect server did not come up on {engine['remote']}: {logs}")
        time.sleep(0.2)
    log.info("engines: Spark Connect server at %s started in %.1f s", engine["remote"],
             time.perf_counter() - started)
    try:
        _start_python_workers(engine["remote"])
    except Exception as err:  # a server whose Python workers cannot start would fail every job
        _stop_connect_server(engine)
        raise EngineStartError(f"the Spark Connect server on {engine['remote']} could not start its Python "
                               f"workers: {type(err).__name__}: {err}") from err
    return engine


def _start_python_workers(remote: str) -> None:
    """Run one small ``mapInArrow`` job on the new server, so that its Python worker daemon and a worker per
    core (with this package imported) are up before the first job: otherwise the first job after `up`
    pays their start (5-8 s on 2 cores) as if it were work."""
    from pyspark.sql import SparkSession

    started = time.perf_counter()
    spark = SparkSession.builder.remote(remote).getOrCreate()
    try:
        cores = os.cpu_count() or 1  # the server runs on this machine
        spark.range(cores, numPartitions=cores).mapInArrow(_batches_as_they_are, "id long").collect()
    finally:
        spark.stop()
    log.info("engines: Spark Connect Python workers started in %.1f s", time.perf_counter() - started)


def _batches_as_they_are(batches):
    # A module function: a worker unpickles it by importing this module, and with it brain (as the jobs' do).
    yield from batches


def engines_down() -> list[str]:
    """Stop the engines the state file records (only those `up` started); returns what was stopped."""
    from concurrent.futures import ThreadPoolExecutor

    state = _read_state()
    stops = {"spark": (_stop_connect_server, "remote"), "ray": (_stop_ray, "address")}
    with ThreadPoolExecutor(2) as pool:  # both at once: each waits for its processes to end
        list(pool.map(lambda name: stops[name][0](state[name]), [name for name in stops if name in state]))
    state_file().unlink(missing_ok=True)
    return [f"{name} {state[name][stops[name][1]]}" for name in stops if name in state]


def _stop_ray(engine: dict) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(engine["pgid"], sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _engine_alive("ray", engine):
            time.sleep(0.2)
    for pid in _processes_mentioning(engine["temp_dir"]):  # any that left the group (none seen so far)
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(engine["temp_dir"], ignore_errors=True)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def _stop_connect_server(engine: dict) -> None:
    env = dict(os.environ, SPARK_HOME=str(_spark_home()), SPARK_PID_DIR=engine["folder"],
               SPARK_IDENT_STRING="lakebrain")
    subprocess.run(["bash", str(_spark_home() / "sbin" / "stop-connect-server.sh")], env=env, capture_output=True)
    deadline = time.monotonic() + 20
    while _engine_alive("spark", engine):
        if time.monotonic() > deadline:
            os.kill(engine["pid"], signal.SIGKILL)
            break
        time.sleep(0.2)
    shutil.rmtree(engine["folder"], ignore_errors=True)  # its pid file and logs


def engines_status() -> dict[str, dict]:
    """Each recorded engine with ``running`` (its process is there) and ``answers`` (its port accepts)."""
    status = {}
    for name, engine in _read_state().items():
        address = engine.get("address") or engine.get("remote")
        running = _engine_alive(name, engine)
        status[name] = dict(address=address, running=running, answers=running and _answers(address),
                            pid=engine.get("pid") or engine.get("pgid"))
    return status
