#!/usr/bin/env bash
# Spark GPU discovery script: prints the GPUs of this node as Spark's ResourceInformation JSON.
# Point spark.{driver,executor,worker}.resource.gpu.discoveryScript at it (see conf/spark/*.conf).
set -euo pipefail
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd, - | sed 's/,/","/g')
echo "{\"name\": \"gpu\", \"addresses\": [\"${addresses}\"]}"
