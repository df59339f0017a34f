"""Airflow DAG: segrec every night on the cluster, one spark-submit per stage, outputs by run date.

Copy into the DAGs folder; needs apache-airflow-providers-apache-spark and a `spark_default`
connection pointing at the cluster. {{ ds }} is the run's logical date: each stage writes the
run_date={{ ds }} partition of its outputs, so a re-run (or backfill) of one date replaces that date
only, and a failed stage can be retried alone (it reads the previous stage's persisted output).
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

SEGREC = "/opt/segrec"  # where `python3 -m jobs.bootstrap package` put dist/ and conf/
COMMON = {
    "conn_id": "spark_default",
    "py_files": f"{SEGREC}/dist/segrec-0.1.0.zip",
    "application": f"{SEGREC}/dist/segrec_main.py",
    "properties_file": f"{SEGREC}/conf/spark/gpu-yarn.conf",
    "files": f"{SEGREC}/conf/gpu/get_gpus_resources.sh",
}

with DAG(
    dag_id="segrec_nightly",
    start_date=datetime(2026, 1, 1),
    schedule="0 2 * * *",
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    previous = None
    for stage in ("validate", "embed", "train", "profile", "segment", "recommend"):
        task = SparkSubmitOperator(
            task_id=stage,
            application_args=[stage, "--conf", f"{SEGREC}/conf/cluster.yaml", "--set", "output.run_date={{ ds }}"],
            name=f"segrec-{stage}-{{{{ ds }}}}",
            **COMMON,
        )
        if previous is not None:
            previous >> task
        previous = task
