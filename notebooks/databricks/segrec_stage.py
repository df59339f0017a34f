# Databricks notebook source
# MAGIC %md
# MAGIC # segrec: one stage (or the whole run) on Databricks
# MAGIC
# MAGIC Uses the notebook's existing `spark` and the same functions as the `segrec` CLI. Widgets: the
# MAGIC run config, the stage, the input tables, the output location and the run date. Classic clusters
# MAGIC need the segrec wheel and its dependencies as cluster libraries (GPU clusters get the task's GPU
# MAGIC automatically); on serverless, add the wheel to the notebook's environment. The scheduled job is
# MAGIC the Asset Bundle in conf/databricks/databricks.yml.

# COMMAND ----------

dbutils.widgets.text("config", "/Workspace/Repos/segrec/conf/cluster.example.yaml", "Run config (YAML)")  # noqa: F821
dbutils.widgets.dropdown(  # noqa: F821
    "stage", "run", ["run", "validate", "embed", "train", "profile", "segment", "recommend", "evaluate"], "Stage"
)
dbutils.widgets.text("items_table", "", "Items table (blank: as in the config)")  # noqa: F821
dbutils.widgets.text("interactions_table", "", "Interactions table (blank: as in the config)")  # noqa: F821
dbutils.widgets.text("users_table", "", "Users table (blank: as in the config)")  # noqa: F821
dbutils.widgets.text("output_path", "", "Output location (blank: as in the config)")  # noqa: F821
dbutils.widgets.text("run_date", "", "Run date YYYY-MM-DD (blank: none)")  # noqa: F821

# COMMAND ----------

from segrec.jobs.config import load_config  # noqa: E402
from segrec.jobs.pipeline import execute  # noqa: E402
from segrec.jobs.segments.portraits import format_table  # noqa: E402
from segrec.jobs.session import get_spark  # noqa: E402

widget = dbutils.widgets.get  # noqa: F821
overrides = []
for source in ("items", "interactions", "users"):
    if widget(f"{source}_table"):
        overrides += [f"inputs.{source}.table={widget(f'{source}_table')}", f"inputs.{source}.path="]
if widget("output_path"):
    overrides.append(f"output.path={widget('output_path')}")
if widget("run_date"):
    overrides.append(f"output.run_date={widget('run_date')}")

config = load_config(widget("config"), overrides)
session = get_spark(config)  # the notebook's own session, reused
manifest = execute(session, config, widget("stage"))
print(manifest.run_id, manifest.status)

# COMMAND ----------

if manifest.segments:
    print(format_table(manifest.segments))
if manifest.sample_recommendations:
    display(spark.createDataFrame(manifest.sample_recommendations))  # noqa: F821
if manifest.evaluation_table:
    # evaluate: the comparison table; metrics.json, report.md and the plots are under <output>/evaluation
    print(manifest.evaluation_table)
