"""`brain submit` keeps credentials out of what it prints and ships: spark.conf secrets masked, env_vars never written."""

from __future__ import annotations

import yaml

from brain.config import Conf
from jobs.registry import load_jobs
from jobs.submit import job_conf_text, printable_command, spark_submit_command

SECRETS = {"spark.hadoop.fs.s3a.secret.key": "s3cr3t-value", "spark.hadoop.fs.s3a.access.key": "AKIAEXAMPLE",
           "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net": "azure-key-value"}


def _conf() -> Conf:
    conf = Conf(lake="/data/lake")
    conf.spark.master = "spark://head:7077"
    conf.spark.conf.update({"spark.executor.memory": "2g", **SECRETS})
    conf.submit.env_vars = {"AWS_SECRET_ACCESS_KEY": "env-s3cr3t", "LAKE_REGION": "eu-west-1"}
    return conf


def test_the_printed_spark_submit_command_masks_credential_values():
    job = load_jobs()["uniqueness"]
    cmd = spark_submit_command(job, _conf(), py_files="pkg.zip", conf_file="job.yaml", submission_id="lakebrain-x")
    assert f"spark.hadoop.fs.s3a.secret.key={SECRETS['spark.hadoop.fs.s3a.secret.key']}" in cmd  # spark gets it
    shown = printable_command(cmd)
    for key, value in SECRETS.items():
        assert value not in shown and f"{key}=***" in shown
    assert "spark.executor.memory=2g" in shown and "spark.app.name=lakebrain-uniqueness" in shown
    assert str(job.script) in shown and job.script.name == "uniqueness.py"


def test_the_shipped_job_config_leaves_env_vars_out():
    text = job_conf_text(_conf())
    assert "env-s3cr3t" not in text and "AWS_SECRET_ACCESS_KEY" not in text
    shipped = yaml.safe_load(text)
    assert shipped["submit"]["env_vars"] == {} and shipped["lake"] == "/data/lake"
    assert Conf.model_validate(shipped).spark.conf["spark.executor.memory"] == "2g"
