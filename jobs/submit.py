"""`brain submit JOB --conf FILE`: send a job to a cluster with the tools data engineers already use.

* Ray jobs (ingest, embed, neighbors, scan, demo) go through the **Ray Jobs API**
  (what `ray job submit` does): the dashboard address ``submit.ray_address``, a runtime
  env whose ``working_dir`` is this package plus the resolved config, and the entrypoint
  ``python -m jobs.NAME --conf lakebrain-job.yaml``.
* Spark jobs (uniqueness) go through **spark-submit** to ``spark.master`` (standalone
  ``spark://``, Kubernetes ``k8s://``, ``yarn``) with the package as ``--py-files`` and
  ``spark.conf`` as ``--conf`` pairs.

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
from brain.runs import SUBMISSION_ENV

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("brain", "jobs")
CONF_NAME = "lakebrain-job.yaml"
RAY_JOBS = {"ingest", "embed", "neighbors", "scan", "demo"}
SPARK_JOBS = {"uniqueness"}
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_RETRIES = 30  # × 2 s


def _copy_package(dest: Path, conf: Conf) -> None:
    for name in PACKAGES:
        shutil.copytree(PACKAGE_ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(PACKAGE_ROOT / "conf", dest / "conf")
    (dest / CONF_NAME).write_text(yaml.safe_dump(conf.model_dump(), sort_keys=False))


def submit(job: str, conf: Conf) -> int:
    """Submit ``job``; returns its exit status (0 once it succeeded, or at once when not waiting)."""
    if job in RAY_JOBS:
        return submit_ray(job, conf)
    if job in SPARK_JOBS:
        return submit_spark(job, conf)
    raise ConfError(f"unknown job {job!r}; Ray jobs: {sorted(RAY_JOBS)}, Spark jobs: {sorted(SPARK_JOBS)}")


def submit_ray(job: str, conf: Conf) -> int:
    from ray.job_submission import JobSubmissionClient

    address = conf.submit.ray_address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfError("submit.ray_address (or $RAY_API_SERVER_ADDRESS) must name the Ray Jobs API, "
                        "e.g. http://head:8265")
    submission_id = f"lakebrain-{job}-{uuid.uuid4().hex[:12]}"
    client = JobSubmissionClient(address)
    with tempfile.TemporaryDirectory(prefix="lakebrain-submit-") as tmp:
        _copy_package(Path(tmp), conf)
        runtime_env = {"working_dir": tmp,
                       "env_vars": {SUBMISSION_ENV: submission_id, **conf.submit.env_vars}}
        if conf.submit.pip:
            runtime_env["pip"] = list(conf.submit.pip)
        for attempt in range(AGENT_RETRIES):
            try:
                client.submit_job(entrypoint=f"{conf.submit.python} -m jobs.{job} --conf {CONF_NAME}",
                                  submission_id=submission_id, runtime_env=runtime_env,
                                  entrypoint_num_gpus=conf.submit.entrypoint_num_gpus or None,
                                  metadata={"lakebrain_job": job, "lake": conf.lake})
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


def spark_submit_command(job: str, conf: Conf, *, py_files: str, conf_file: str, submission_id: str) -> list[str]:
    """The spark-submit command line for ``job`` (the driver and Python workers use ``spark.pyspark.python``)."""
    settings = {"spark.pyspark.python": sys.executable, "spark.app.name": f"lakebrain-{job}",
                f"spark.executorEnv.{SUBMISSION_ENV}": submission_id, **conf.spark.conf}
    if conf.submit.deploy_mode == "cluster":
        settings[f"spark.kubernetes.driverEnv.{SUBMISSION_ENV}"] = submission_id
        settings[f"spark.yarn.appMasterEnv.{SUBMISSION_ENV}"] = submission_id
    cmd = [spark_submit_binary(conf), "--master", conf.spark.master, "--deploy-mode", conf.submit.deploy_mode,
           "--py-files", py_files, "--files", conf_file]
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    conf_arg = conf_file if conf.submit.deploy_mode == "client" else Path(conf_file).name
    return cmd + [str(PACKAGE_ROOT / "jobs" / f"{job}.py"), "--conf", conf_arg]


def submit_spark(job: str, conf: Conf) -> int:
    if conf.spark.master.startswith("local"):
        raise ConfError(f"spark.master is {conf.spark.master!r}: spark-submit needs a cluster master "
                        "(spark://host:7077, k8s://https://api:6443, yarn); run `brain {job}` for a local session")
    submission_id = f"lakebrain-{job}-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="lakebrain-submit-") as tmp:
        archive = Path(tmp) / "lakebrain.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for name in PACKAGES:
                for path in (PACKAGE_ROOT / name).rglob("*.py"):
                    zf.write(path, path.relative_to(PACKAGE_ROOT))
        conf_file = Path(tmp) / CONF_NAME
        conf_file.write_text(yaml.safe_dump(conf.model_dump(), sort_keys=False))
        cmd = spark_submit_command(job, conf, py_files=str(archive), conf_file=str(conf_file),
                                   submission_id=submission_id)
        env = dict(os.environ, **{SUBMISSION_ENV: submission_id}, PYSPARK_PYTHON=sys.executable)
        print(f"submitted {submission_id} to Spark at {conf.spark.master}: {' '.join(cmd)}", flush=True)
        code = subprocess.run(cmd, env=env).returncode
    print(f"{submission_id}: {'SUCCEEDED' if code == 0 else f'FAILED (exit {code})'}", flush=True)
    return code
