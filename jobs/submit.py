"""`brain submit JOB --conf FILE`: send a job to a cluster with the tools data engineers already use.

Every job can be submitted; its declared engine (``jobs.registry``) picks the way:

* ``ray`` jobs go through the **Ray Jobs API** (what `ray job submit` does): the dashboard
  address ``submit.ray_address``, a runtime env whose ``working_dir`` is this package plus
  the resolved config, and the entrypoint ``python -m jobs.NAME --conf lakebrain-job.yaml``.
* ``spark`` jobs go through **spark-submit** to ``spark.master`` (standalone ``spark://``,
  Kubernetes ``k8s://``, ``yarn``) with the package as ``--py-files`` and ``spark.conf`` as
  ``--conf`` pairs.
* ``driver`` jobs (no engine of their own) go through the Ray Jobs API when a Ray address
  is configured (the job then runs on the head node), else through spark-submit (the job
  runs as the Spark driver program).

Credentials stay out of what the submitter prints: ``submit.env_vars`` are never printed, and
values of ``spark.conf`` keys that look like credentials (``spark.hadoop.fs.s3a.secret.key``)
are shown as ``***``. The job's own config file leaves ``submit.env_vars`` out: the job
receives them as environment variables (the Ray runtime env, or spark-submit's environment).

The submitter names the submission (``lakebrain-JOB-<hex>``) and passes it to the job as
``$LAKEBRAIN_SUBMISSION_ID``, which the run catalog records next to the run's status and
where it ran (``executed_on``). With ``submit.wait`` it streams the job's logs until it ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import yaml

from brain.config import Conf, ConfError
from brain.runs import REDACTED, SUBMISSION_ENV, looks_like_credential
from jobs.registry import Job

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("brain", "jobs")
CONF_NAME = "lakebrain-job.yaml"
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_RETRIES = 30  # × 2 s


def job_conf_text(conf: Conf) -> str:
    """The config file shipped with the job: the resolved config without ``submit.env_vars``."""
    data = conf.model_dump()
    data["submit"]["env_vars"] = {}
    return yaml.safe_dump(data, sort_keys=False)


def _copy_package(dest: Path, conf: Conf) -> None:
    for name in PACKAGES:
        shutil.copytree(PACKAGE_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(PACKAGE_ROOT / "conf", dest / "conf")
    (dest / CONF_NAME).write_text(job_conf_text(conf))


def ray_address(conf: Conf) -> str | None:
    return conf.submit.ray_address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")


def submit(job: Job, conf: Conf) -> int:
    """Submit ``job`` on its engine; returns its exit status (0 once it succeeded, or at once when not waiting)."""
    if job.engine == "ray" or (job.engine == "driver" and ray_address(conf)):
        return submit_ray(job, conf)
    return submit_spark(job, conf)


def submit_ray(job: Job, conf: Conf) -> int:
    from ray.job_submission import JobSubmissionClient

    address = ray_address(conf)
    if not address:
        raise ConfError(f"`{job.name}` runs on Ray: submit.ray_address (or $RAY_API_SERVER_ADDRESS) must name "
                        "the Ray Jobs API, e.g. http://head:8265")
    submission_id = f"lakebrain-{job.name}-{uuid.uuid4().hex[:12]}"
    client = JobSubmissionClient(address)
    with tempfile.TemporaryDirectory(prefix="lakebrain-submit-") as tmp:
        _copy_package(Path(tmp), conf)
        runtime_env = {"working_dir": tmp,
                       "env_vars": {SUBMISSION_ENV: submission_id, **conf.submit.env_vars}}
        if conf.submit.pip:
            runtime_env["pip"] = list(conf.submit.pip)
        for attempt in range(AGENT_RETRIES):
            try:
                client.submit_job(entrypoint=f"{conf.submit.python} -m {job.module} --conf {CONF_NAME}",
                                  submission_id=submission_id, runtime_env=runtime_env,
                                  entrypoint_num_gpus=conf.submit.entrypoint_num_gpus or None,
                                  metadata={"lakebrain_job": job.name, "lake": conf.lake})
                break
            except RuntimeError as err:  # a cluster that just started: its job agent is not up yet
                if "No available agent" not in str(err) or attempt == AGENT_RETRIES - 1:
                    raise
                time.sleep(2.0)
    print(f"submitted {submission_id} to Ray at {address}; logs: ray job logs --address {address} -f {submission_id}",
          flush=True)
    if not conf.submit.wait:
        return 0
    printed = 0
    while True:
        status = str(client.get_job_status(submission_id).value)
        logs = client.get_job_logs(submission_id)
        sys.stdout.write(logs[printed:])
        sys.stdout.flush()
        printed = len(logs)
        if status in FINAL:
            break
        time.sleep(1.0)
    print(f"{submission_id}: {status}", flush=True)
    return 0 if status == "SUCCEEDED" else 1


def spark_submit_binary(conf: Conf) -> str:
    if conf.submit.spark_submit:
        return conf.submit.spark_submit
    found = shutil.which("spark-submit") or str(Path(sys.executable).parent / "spark-submit")
    if not Path(found).exists():
        import pyspark

        found = str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    return found


def spark_submit_command(job: Job, conf: Conf, *, py_files: str, conf_file: str, submission_id: str) -> list[str]:
    """The spark-submit command line for ``job`` (the driver and Python workers use ``spark.pyspark.python``)."""
    settings = {"spark.pyspark.python": sys.executable, "spark.app.name": f"lakebrain-{job.name}",
                f"spark.executorEnv.{SUBMISSION_ENV}": submission_id, **conf.spark.conf}
    if conf.submit.deploy_mode == "cluster":
        settings[f"spark.kubernetes.driverEnv.{SUBMISSION_ENV}"] = submission_id
        settings[f"spark.yarn.appMasterEnv.{SUBMISSION_ENV}"] = submission_id
    cmd = [spark_submit_binary(conf), "--master", conf.spark.master, "--deploy-mode", conf.submit.deploy_mode,
           "--py-files", py_files, "--files", conf_file]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    conf_arg = conf_file if conf.submit.deploy_mode == "client" else Path(conf_file).name
    return cmd + [str(job.script), "--conf", conf_arg]


def printable_command(cmd: list[str]) -> str:
    """``cmd`` with the values of credential-looking ``--conf key=value`` pairs replaced by ``***``."""
    shown = []
    for before, arg in zip([None, *cmd], cmd):
        key, sep, _ = arg.partition("=")
        shown.append(f"{key}={REDACTED}" if before == "--conf" and sep and looks_like_credential(key) else arg)
    return " ".join(shown)


def submit_spark(job: Job, conf: Conf) -> int:
    if conf.spark.master.startswith("local"):
        raise ConfError(f"spark.master is {conf.spark.master!r}: spark-submit needs a cluster master "
                        f"(spark://host:7077, k8s://https://api:6443, yarn){' or submit.ray_address' if job.engine == 'driver' else ''}; "
                        f"run `brain {job.name}` for a local session")
    submission_id = f"lakebrain-{job.name}-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="lakebrain-submit-") as tmp:
        archive = Path(tmp) / "lakebrain.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name in PACKAGES:
                for path in (PACKAGE_ROOT / name).rglob("*.py"):
                    zf.write(path, path.relative_to(PACKAGE_ROOT))
        conf_file = Path(tmp) / CONF_NAME
        conf_file.write_text(job_conf_text(conf))
        cmd = spark_submit_command(job, conf, py_files=str(archive), conf_file=str(conf_file),
                                   submission_id=submission_id)
        env = dict(os.environ, **conf.submit.env_vars, **{SUBMISSION_ENV: submission_id}, PYSPARK_PYTHON=sys.executable)
        print(f"submitted {submission_id} to Spark at {conf.spark.master}: {printable_command(cmd)}", flush=True)
        code = subprocess.run(cmd, env=env).returncode
    print(f"{submission_id}: {'SUCCEEDED' if code == 0 else f'FAILED (exit {code})'}", flush=True)
    return code
