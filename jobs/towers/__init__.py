"""The learned models on the driver: the two-tower model (examples, distributed training, applying it) and the
Spark ML ALS factors blended beside it."""
