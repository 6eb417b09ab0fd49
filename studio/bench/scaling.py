"""`vgrpo bench scaling`: one training config run as 1, 2, ... data-parallel processes.

Each process count runs `vgrpo train --devices N` (N torchrun ranks: gloo on the CPU, one GPU each under
NCCL) from the same config for the same iterations, and reports the median iteration time after the
first (warm-up) iteration, images per second, the speed-up over the first count, and the start-up
seconds (the launch, model and reward loading: the wall time the iterations do not account for). On a
CPU every rank shares the same cores (torchrun gives each rank one thread), so more processes cannot
be faster there; the figure that matters is on several GPUs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from studio.bench import device_name
from trainer_core.config import TrainConfig, dump_config


def scaling_benchmark(config: TrainConfig, processes: list[int], device: str = "cpu") -> dict[str, object]:
    """Median iteration seconds and images per second of `config` on each count of `processes`."""
    if not processes or min(processes) < 1:
        raise ValueError(f"--processes: whole numbers >= 1, got {processes}")
    if config.iterations < 2:
        raise ValueError(f"--iterations: at least 2 (the first is a warm-up), got {config.iterations}")
    images = config.rollout.prompts_rolled_out * config.rollout.group_size
    rows = []
    with tempfile.TemporaryDirectory(prefix="vgrpo-scaling-") as scratch:
        path = Path(scratch) / "config.yaml"
        path.write_text(dump_config(config))
        for count in processes:
            out = Path(scratch) / f"processes-{count}"
            command = [sys.executable, "-m", "studio.cli", "train", "--config", str(path), "--out", str(out)]
            started = time.perf_counter()
            completed = subprocess.run([*command, "--devices", str(count)], capture_output=True, text=True, check=False)
            wall = time.perf_counter() - started
            if completed.returncode:
                raise RuntimeError(f"{count} processes: vgrpo train failed:\n{completed.stderr[-2000:]}")
            metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            iteration_s = statistics.median(row["iteration_s"] for row in metrics[1:])
            rows.append(
                {
                    "processes": count,
                    "iteration_s": round(iteration_s, 3),
                    "images_per_s": round(images / iteration_s, 2),
                    "startup_s": round(wall - sum(row["iteration_s"] for row in metrics), 1),
                    "final_reward": round(metrics[-1]["reward_mean"], 4),
                }
            )
    for row in rows:
        row["speedup"] = round(rows[0]["iteration_s"] / row["iteration_s"], 2)  # type: ignore[operator]
    return {
        "benchmark": "scaling",
        "device": device_name(device),
        "model": config.model.name,
        "images_per_iteration": images,
        "iterations": config.iterations,
        "results": rows,
    }
