"""Executor-side code for segrec: everything that runs inside Spark's Python workers.

Nothing here imports pyspark's driver APIs (SparkSession, DataFrame): functions take numpy/pandas in
and give numpy/pandas out, so they are unit-tested without Spark.
"""
