"""Run many variants of one preset side by side and evaluate their checkpoints on the held-out set.

An experiment script for tuning on a machine with room for several runs at once (a GPU box), not
part of the product. A grid file maps variant names to overrides of the base preset, merged
section by section:

    base: shapes-geneval
    variants:
      control: {}
      batch_std: {rewards: {advantage_std: batch}}
      lr_cosine: {optimizer: {learning_rate: 0.004, lr_schedule: cosine}}

    python bench/scripts/sweep.py --grid GRID.yaml --out DIR [--parallel 12] [--deadline-minutes 6]

Each variant trains in its own process (`DIR/NAME/` is an ordinary run directory) until its
iterations are done or the deadline passes, evaluating each checkpoint on the held-out set as it is
written (the deadline's stop writes one too); `DIR/sweep.json` collects held-out accuracy per
checkpoint and the table is printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def run_variant(name: str, config_dict: dict[str, Any], out: str, deadline: float, seeds: int, eval_batch: int) -> None:
    """Train one variant until done or past the deadline, evaluating each checkpoint as it is written."""
    import torch

    torch.set_num_threads(1)
    from studio.training import run_training
    from trainer_core.adapters import load_model
    from trainer_core.config import TrainConfig, from_dict
    from trainer_core.shapes.evaluation import SamplingConfig, evaluate
    from trainer_core.shapes.prompt_sets import load_heldout

    run_dir = Path(out) / name
    config = from_dict(TrainConfig, config_dict)
    specs = load_heldout()
    evaluator = load_model(config.model)
    evals: dict[str, dict[str, Any]] = {}

    def on_checkpoint(iteration: int, path: Path) -> None:
        evaluator.load_lora(path)
        result = evaluate(evaluator, specs, seeds, SamplingConfig(batch_size=eval_batch))
        evals[path.stem] = {
            **result.accuracy,
            "overall_per_seed": result.overall_per_seed,
            "overall_standard_error": result.overall_standard_error,
        }
        (run_dir / "heldout.json").write_text(json.dumps(evals, indent=1))

    with (run_dir.parent / f"{name}.log").open("w") as log:
        try:
            result = run_training(
                config, run_dir, should_stop=lambda: time.time() > deadline, on_checkpoint=on_checkpoint
            )
            log.write(f"trained {result.iterations_done} iterations, interrupted={result.interrupted}\n")
        except Exception as error:  # one broken variant must not lose the others
            log.write(f"FAILED: {error!r}\n")
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parallel", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument(
        "--deadline-minutes", type=float, default=6.0, help="training stops then (last checkpoint evaluated)"
    )
    parser.add_argument("--seeds", type=int, default=6, help="held-out seeds per prompt")
    parser.add_argument("--eval-batch", type=int, default=64, help="images per model call in evaluation")
    parser.add_argument("--only", default="", help="comma-separated variant names to run (default all)")
    args = parser.parse_args()

    from trainer_core.config import load_preset, to_dict

    grid = yaml.safe_load(args.grid.read_text())
    base = to_dict(load_preset(grid["base"]))
    base = merged(base, grid.get("common", {}))
    variants = grid["variants"]
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.deadline_minutes * 60
    ctx = mp.get_context("spawn")
    pending = [(name, merged(base, overrides or {})) for name, overrides in variants.items()]
    running: list[mp.Process] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            name, config = pending.pop(0)
            proc = ctx.Process(
                target=run_variant, args=(name, config, str(args.out), deadline, args.seeds, args.eval_batch)
            )
            proc.start()
            running.append(proc)
        time.sleep(1)
        running = [p for p in running if p.is_alive()]

    summary = {}
    for name in variants:
        heldout = args.out / name / "heldout.json"
        metrics = args.out / name / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        summary[name] = {
            "overrides": variants[name],
            "iterations": len(rows),
            "seconds_per_iteration": rows[-1]["wall_time_s"] / len(rows) if rows else None,
            "heldout": json.loads(heldout.read_text()) if heldout.is_file() else None,
        }
    (args.out / "sweep.json").write_text(json.dumps(summary, indent=1))
    for name, entry in summary.items():
        curve = " ".join(
            f"{k.removeprefix('iter_').lstrip('0')}:{v['overall']:.3f}" for k, v in (entry["heldout"] or {}).items()
        )
        print(f"{name:<24} {entry['iterations']:>4} it  {curve}")


if __name__ == "__main__":
    main()
