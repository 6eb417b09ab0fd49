"""Does what an MDP baseline learns reach the ODE sampler the evaluation uses, or other prompts?

Its training reward is measured on SDE samples of training prompts, the benchmark's accuracy on ODE
samples of held-out prompts: two differences at once. This trains one run of a baseline config for a
wall-clock budget and scores the base model and the trained LoRA on both prompt sets under three
samplers: the evaluation's ODE (Heun, 12 steps), the ODE on the training grid (Euler, the rollout's
steps) and the training SDE itself (Euler-Maruyama at the config's noise level):

    python bench/scripts/sampler_transfer.py --config FILE.yaml --budget-minutes 10 --out FILE.json \
        [--seed 0] [--prompts-per-category 20] [--images-per-prompt 2] [--model NAME]

A gain under the SDE that the ODE samplers do not show says the update is specific to the sampler;
a gain on training prompts that held-out prompts do not show says it is specific to the prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from studio.bench.speed import load_lora_state, train_with_budget
from studio.training import build_rewards
from trainer_core.algorithms import make_trainer
from trainer_core.config import load_config
from trainer_core.mdp_trainer import FlowGRPOTrainer
from trainer_core.shapes.evaluation import SamplingConfig, evaluate
from trainer_core.shapes.grammar import CATEGORIES, SceneSpec
from trainer_core.shapes.prompt_sets import heldout_subset, train_prompts
from trainer_core.shapes.scoring import score_images


def stratified_train_prompts(per_category: int, seed: int) -> list[SceneSpec]:
    """`per_category` prompts of each category from the training sampler (as the held-out subset is)."""
    chosen: dict[str, list[SceneSpec]] = {c: [] for c in CATEGORIES}
    for spec in train_prompts(200 * per_category * len(CATEGORIES), seed):
        if len(chosen[spec.category]) < per_category:
            chosen[spec.category].append(spec)
    return [spec for specs in chosen.values() for spec in specs]


def sde_accuracy(trainer: FlowGRPOTrainer, specs: list[SceneSpec], chunk: int = 32) -> float:
    """Held-out style accuracy (mean over categories) of the trainer's own SDE rollouts."""
    scores: list[float] = []
    for start in range(0, len(specs), chunk):
        part = specs[start : start + chunk]
        generation, _ = trainer.generate([s.prompt for s in part])
        per_image = [s for s in part for _ in range(trainer.config.rollout.group_size)]
        scores.extend(score["geneval"] for score in score_images(generation.images, per_image))
    group = trainer.config.rollout.group_size
    per_spec = [float(np.mean(scores[i * group : (i + 1) * group])) for i in range(len(specs))]
    by_category = {c: [v for s, v in zip(specs, per_spec, strict=True) if s.category == c] for c in CATEGORIES}
    return float(np.mean([np.mean(v) for v in by_category.values() if v]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a flow-grpo or mix-grpo YAML config")
    parser.add_argument("--budget-minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts-per-category", type=int, default=20)
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--model", help="override the config's base model (e.g. a tiny test model)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    config = load_config(args.config)
    if config.algorithm not in ("flow-grpo", "mix-grpo"):
        raise SystemExit(f"--config: trains {config.algorithm!r}; this compares samplers of flow-grpo or mix-grpo")
    model = dataclasses.replace(config.model, name=args.model or config.model.name)
    config = dataclasses.replace(config, seed=args.seed, iterations=10**6, model=model)
    run = train_with_budget(config, args.budget_minutes * 60, marks=1)

    images = args.images_per_prompt
    sde_config = dataclasses.replace(config, rollout=dataclasses.replace(config.rollout, group_size=images))
    prompt_sets = {
        "train": stratified_train_prompts(args.prompts_per_category, seed=10_000 + args.seed),
        "heldout": heldout_subset(args.prompts_per_category),
    }
    samplers = {
        "ode_heun_12 (evaluation)": SamplingConfig(),
        f"ode_euler_{config.rollout.steps} (training grid)": SamplingConfig(steps=config.rollout.steps, solver="euler"),
    }
    sde_name = f"sde_{config.rollout.steps} (training, noise {config.flow_grpo.noise_level})"
    rows = []
    for label, state in (("base", run.states[0]), ("trained", run.states[-1])):
        load_lora_state(run.adapter, state)
        # the SDE sampler of a trainer built on the same adapter, with the window at the end of the run
        sampler = make_trainer(run.adapter, build_rewards(sde_config), sde_config)
        sampler.elapsed_fraction = 1.0
        for prompts, specs in prompt_sets.items():
            row: dict[str, object] = {"weights": label, "prompts": prompts}
            for name, sampling in samplers.items():
                row[name] = evaluate(run.adapter, specs, images, sampling).accuracy["overall"]
            row[sde_name] = sde_accuracy(sampler, specs)  # type: ignore[arg-type]
            rows.append(row)
            print(row, flush=True)
    history = run.history
    report = {
        "config": str(args.config),
        "budget_minutes": args.budget_minutes,
        "seed": args.seed,
        "iterations": run.snapshots[-1].iteration,
        "train_reward_first_last_10": [
            float(np.mean([m["reward_mean"] for m in history[:10]])),
            float(np.mean([m["reward_mean"] for m in history[-10:]])),
        ],
        "images": {p: len(s) * images for p, s in prompt_sets.items()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    columns = ["weights", "prompts", *samplers, sde_name]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
