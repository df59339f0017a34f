"""Entry script for spark-submit: the same CLI, with the session spark-submit configured.

    spark-submit --master yarn --deploy-mode cluster \
        --py-files dist/segrec-<version>.zip --files conf/cluster.yaml \
        dist/segrec_main.py run --conf cluster.yaml

``python3 -m jobs.bootstrap package`` writes this file as dist/segrec_main.py next to the zip that
executors import ``jobs`` and ``udfs`` from.
"""

import sys

from segrec.jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
