"""Which denoising steps drive Flow-GRPO's update? The gradient norm of its policy loss, step by step.

One rollout batch of a Flow-GRPO preset on shapes-base, a LoRA nudged off zero (so that gradients reach
both of its factors), the clipped objective at theta = theta_old (ratio 1: the plain policy gradient
-mean(A log p)) for each SDE step alone:

    python bench/scripts/step_gradients.py --out FILE.json [--shift 3] [--seed 0]

`--shift` overrides the sampling grid's time shift (shapes-base's is 1; SD3 uses 3).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from studio.training import build_rewards
from trainer_core.adapters import load_adapter
from trainer_core.algorithms import make_trainer
from trainer_core.config import load_preset
from trainer_core.mdp_trainer import FlowGRPOTrainer
from trainer_core.sde import gaussian_log_prob


def step_gradient_norms(trainer: FlowGRPOTrainer) -> list[dict[str, float]]:
    config = trainer.config
    prompts = trainer.prompts.draw(config.rollout.prompts_per_iteration)
    generation, trace = trainer.generate(prompts)
    scores = trainer.rewards.score(generation.images, generation.prompts)
    advantages = trainer.rewards.advantages(scores, config.rollout.group_size, trainer.advantage_eps)
    advantages = trainer.shape_advantages(advantages)
    rows = []
    for step in range(config.rollout.steps):
        trainer.optimizer.zero_grad(set_to_none=True)
        z, z_next = trace.states[step], trace.states[step + 1]
        with trainer.adapter.lora_merged():
            mean, std = trainer.step_mean_std(z, trainer._velocity(z, step, generation.embeddings), step)
            (-(gaussian_log_prob(z_next, mean, std) * advantages).mean()).backward()
        norm = torch.sqrt(sum((p.grad**2).sum() for p in trainer.parameters if p.grad is not None))
        rows.append({"step": step, "t": trainer.sigmas[step], "step_std": std, "grad_norm": float(norm)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-geneval-flow-grpo")
    parser.add_argument("--shift", type=float, help="time shift of the sampling grid (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = dataclasses.replace(load_preset(args.preset), seed=args.seed)  # prompts, noise, LoRA nudge
    adapter = load_adapter(config.model.name, "cpu")
    if args.shift is not None:
        adapter.time_shift = args.shift
    trainer = make_trainer(adapter, build_rewards(config), config)
    assert isinstance(trainer, FlowGRPOTrainer), "an MDP baseline's preset"
    with torch.no_grad():
        for param in trainer.parameters:
            param.add_(0.01 * torch.randn_like(param))
    rows = step_gradient_norms(trainer)
    norms = np.array([row["grad_norm"] for row in rows])
    summary = {
        "preset": args.preset,
        "shift": adapter.time_shift,
        "seed": args.seed,
        "last_over_first": float(norms[-1] / norms[0]),
        "share_of_squared_norm_in_last_3_steps": float((norms[-3:] ** 2).sum() / (norms**2).sum()),
        "steps": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    for row in rows:
        print(f"step {row['step']}  t {row['t']:.3f}  step std {row['step_std']:.3f}  |grad| {row['grad_norm']:.2e}")
    print(
        f"last/first {summary['last_over_first']:.0f}x; last 3 steps: "
        f"{summary['share_of_squared_norm_in_last_3_steps']:.0%} of the squared norm"
    )


if __name__ == "__main__":
    main()
