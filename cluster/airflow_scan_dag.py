"""Airflow: an hourly `brain scan`, never two at once (max_active_runs=1).

Copy into your DAGs folder; the worker needs this package installed (or use a
KubernetesPodOperator with the lakebrain image and the same command).
"""

import datetime as dt

from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG(
    dag_id="lakebrain_scan",
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=5)},
) as dag:
    BashOperator(task_id="scan", bash_command="brain scan --conf /etc/lakebrain/job.yaml")
