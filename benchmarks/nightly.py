"""Two nights of the demo, as a scheduler runs them: does a refit keep the segment ids, and what does
``segment.refit: drift`` save?

Night 1 (run_date 2026-12-01) is ``segrec run`` on MovieLens 100K without a seeded 10% of the users and
without the newest 5% of the interactions. Night 2 (2026-12-02) has every user and interaction (the
10% new users and 5% more interactions), the towers applied (``train.mode: apply``), and its segment
stage run twice against night 1: refit (``segment.refit: always``) and drift (``segment.refit:
drift``). Prints the ids kept and their matched Jaccard, agreement, transitions, list churn, and the
segment stage's seconds under each policy with their ratio, measured in the same process.

    .venv/bin/python benchmarks/nightly.py /tmp/nightly
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import pandas as pd
import yaml

from segrec.jobs import cli
from segrec.jobs.sources.demo_data import ensure_movielens

DATES = ("2026-12-01", "2026-12-02")


def nights(source: Path, target: Path, seed: int) -> None:
    """Write night 1's and night 2's inputs under ``target``."""
    users = pd.read_parquet(source / "users.parquet")
    interactions = pd.read_parquet(source / "interactions.parquet")
    rng = np.random.default_rng(seed)
    late = set(rng.choice(users["user_id"].to_numpy(), size=len(users) // 10, replace=False))
    cut = interactions["timestamp"].quantile(0.95)
    first = interactions[~interactions["user_id"].isin(late) & (interactions["timestamp"] <= cut)]
    for run_date, (u, i) in zip(
        DATES, [(users[~users["user_id"].isin(late)], first), (users, interactions)], strict=True
    ):
        folder = target / run_date
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "items.parquet", folder / "items.parquet")
        u.to_parquet(folder / "users.parquet", index=False)
        i.to_parquet(folder / "interactions.parquet", index=False)
        print(f"night {run_date}: {len(u)} users, {len(i)} interactions")


def config(root: Path, run_date: str) -> Path:
    conf = yaml.safe_load((common.ROOT / "conf" / "local.yaml").read_text())
    conf.pop("demo", None)
    for name in ("items", "users", "interactions"):
        conf["inputs"][name]["path"] = str(root / "in" / run_date / f"{name}.parquet")
    conf["output"] = {"path": str(root / "out"), "format": "parquet", "run_date": run_date}
    path = root / f"{run_date}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def run(command: str, conf: Path, *overrides: str) -> dict:
    code = cli.main([command, "--conf", str(conf), *[a for o in overrides for a in ("--set", o)]])
    if code != 0:
        sys.exit(f"segrec {command} failed with exit {code}")
    return json.loads((conf.parent / "out" / "manifest.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a scratch directory (replaced)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3, help="segment stage runs per policy (medians compared)")
    args = parser.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    source = ensure_movielens(args.root / "movielens100k")
    nights(source, args.root / "in", args.seed)

    run("run", config(args.root, DATES[0]))
    second = config(args.root, DATES[1])
    for stage in ("validate", "embed", "train", "profile"):
        run(stage, second, "train.mode=apply")
    seconds: dict[str, list[float]] = {"always": [], "drift": []}
    last = {}
    for policy in ("always", "drift") * args.repeats:  # alternating, so both see the same machine
        figures = run("segment", second, f"segment.refit={policy}")["stages"]["segment"]
        seconds[policy].append(figures["seconds"])
        last[policy] = figures
    for name, figures in (("always", last["always"]), ("drift", last["drift"])):
        print(f"\nsegment.refit={name}: mode {figures['mode']}, k {figures['k']}, seconds {seconds[name]}")
        print(f"  drift {figures.get('drift')}: {figures.get('refit_reason', 'refitted (refit: always)')}")
        print(f"  agreement with {figures['previous_run']}: {figures['agreement_with_previous']}")
        print(f"  new users {figures['new_users']}, departed {figures['departed_users']}")
        for row in figures["segments_vs_previous"]:
            print(
                f"  segment {row['segment_id']}: {row['status']} {row['status_ids']} "
                f"Jaccard {row['matched_jaccard']} previous size {row['previous_size']}"
            )
        print(f"  retired: {figures['retired_segments']}")
    refit, kept = float(np.median(seconds["always"])), float(np.median(seconds["drift"]))
    print(f"\nsegment stage, median of {args.repeats}: refit {refit:.1f} s / drift {kept:.1f} s = {refit / kept:.2f}x")
    moves = pd.read_parquet(args.root / "out" / "segment_transitions" / f"run_date={DATES[1]}")
    both = len(
        set(pd.read_parquet(args.root / "in" / DATES[0] / "users.parquet")["user_id"])
        | set(pd.read_parquet(args.root / "in" / DATES[1] / "users.parquet")["user_id"])
    )
    print(f"transitions (drift night): {int(moves['users'].sum())} users, users of both nights {both}")
    recommend = run("recommend", second)["stages"]["recommend"]
    print(
        f"list Jaccard with {recommend['previous_run']}: {recommend['list_jaccard_with_previous']} "
        f"over {recommend['users_with_previous_list']} users"
    )


if __name__ == "__main__":
    main()
