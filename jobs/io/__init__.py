"""What a run writes and records: the output store (datasets, models, dated runs), the checks that keep outputs off
the inputs, the run manifest, MLflow tracking, and row counts."""
