"""One method, one seed, trained and evaluated exactly as `vgrpo bench speed` does, without the
target: for probing a baseline's settings before a full speed run.

    python bench/scripts/probe_budget.py CONFIG.yaml MINUTES MARKS SEED OUT.json
"""

from __future__ import annotations

import dataclasses
import json
import sys

from studio.bench.speed import evaluate_snapshots, train_with_budget
from trainer_core.config import load_config
from trainer_core.shapes.evaluation import SamplingConfig
from trainer_core.shapes.prompt_sets import heldout_subset


def main(path: str, minutes: float, marks: int, seed: int, out: str) -> None:
    config = dataclasses.replace(load_config(path), seed=seed)
    run = train_with_budget(config, minutes * 60, marks)
    print(f"{run.snapshots[-1].iteration} iterations; evaluating", flush=True)
    evaluate_snapshots(run.adapter, run.snapshots, run.states, heldout_subset(20), 2, SamplingConfig())
    for s in run.snapshots:
        print(
            f"mark {s.mark}: {s.wall_s:.0f} s, iteration {s.iteration}, train reward {s.train_reward:.3f}, "
            f"held-out {s.accuracy:.3f}"
        )
    with open(out, "w") as f:
        snapshots = [dataclasses.asdict(s) for s in run.snapshots]
        json.dump({"config": path, "seed": seed, "snapshots": snapshots}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
