"""`vgrpo bench ablation`: V-GRPO's knobs one at a time, from the shapes-geneval preset.

Each variant changes one thing (METHOD.md sections 3-5): the number of (t, eps) pairs, each
variance reduction off in turn, the surrogate's parameterisation, and the step control (ratio
clip, soft clip on-policy, penalty to theta_old). It trains for a fixed number of iterations and
reports held-out accuracy (stratified subset) and the mean within-group surrogate CV.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from studio.bench import device_name
from studio.bench.speed import heldout_subset, train_with_budget
from trainer_core.adapters import resolve_device
from trainer_core.config import TrainConfig, load_preset
from trainer_core.shapes.evaluation import SamplingConfig, evaluate

#: variant -> changes to the preset's `vgrpo` section
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "n_mc=1": {"n_mc": 1},
    "n_mc=2": {"n_mc": 2},
    "n_mc=8": {"n_mc": 8},
    "no pair sharing": {"pair_sharing": "none"},
    "no stratification": {"stratified": False},
    "no adaptive weighting": {"adaptive_weighting": False},
    "v-parameterisation": {"parameterisation": "v"},
    "eps-parameterisation": {"parameterisation": "eps"},
    # with one gradient step (the preset) every ratio is 1 and the clip never acts; two steps let it
    "ratio clip (2 steps)": {"clip_epsilon": 0.01, "gradient_steps": 2},
    "soft clip (on-policy)": {"clip_epsilon": 0.0, "soft_clip_eta": 3.0, "gradient_steps": 1},
    "penalty (beta 0.3)": {"clip_epsilon": 0.0, "beta": 0.3},
}


def variant_config(base: TrainConfig, variant: str, iterations: int) -> TrainConfig:
    if variant not in VARIANTS:
        raise ValueError(f"--variants: unknown {variant!r}; allowed: {', '.join(VARIANTS)}")
    return dataclasses.replace(base, iterations=iterations, vgrpo=dataclasses.replace(base.vgrpo, **VARIANTS[variant]))


def ablation_benchmark(
    variants: list[str],
    iterations: int,
    seed: int = 0,
    eval_per_category: int = 20,
    eval_seeds: int = 2,
    base: TrainConfig | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    base = base or load_preset("shapes-geneval")
    configs = {v: dataclasses.replace(variant_config(base, v, iterations), seed=seed) for v in variants}
    specs = heldout_subset(eval_per_category)
    rows = []
    for variant, config in configs.items():
        log(f"[{variant}] {iterations} iterations")
        run = train_with_budget(config, math.inf, marks=1, max_iterations=iterations)
        adapter, snapshots, history = run.adapter, run.snapshots, run.history
        cvs = [m["surrogate_cv_within_group"] for m in history]
        accuracy = evaluate(adapter, specs, eval_seeds, SamplingConfig()).accuracy["overall"]
        rows.append(
            {
                "variant": variant,
                "changes": VARIANTS[variant],
                "accuracy": round(accuracy, 4),
                "surrogate_cv_within_group": round(float(np.mean(cvs)), 4),
                "train_reward_last10": round(float(np.mean([m["reward_mean"] for m in history[-10:]])), 4),
                "wall_s": round(snapshots[-1].wall_s, 1),
            }
        )
        log(f"[{variant}] accuracy {accuracy:.3f}, within-group CV {np.mean(cvs):.3f}")
    return {
        "benchmark": "ablation",
        "device": device_name(str(resolve_device(base.model.device))),
        "preset": "shapes-geneval",
        "iterations": iterations,
        "seed": seed,
        "evaluation": {"prompts": len(specs), "seeds": eval_seeds},
        "results": rows,
    }


ABLATION_COLUMNS = ["variant", "accuracy", "surrogate_cv_within_group", "train_reward_last10", "wall_s"]
