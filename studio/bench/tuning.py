"""`vgrpo bench tune`: every method tuned by one rule, before any comparison of speed.

Each method gets the same kind of grid: its preset's learning rate times 1/2, 1 and 2, crossed with two
values of each of its two most important knobs (`TUNING_KNOBS`): 12 probes per method. Every probe
trains from the method's preset for the same wall-clock budget, with the same training seeds and the
same learning-rate schedule for every method, and is evaluated at the end on the same held-out subset;
the probe with the best mean accuracy over the seeds is the method's setting (ties: the earlier probe).
The report keeps every probe's accuracies and its training diagnostics (KL, clip fraction, ratio spread,
gradient norm), and the chosen settings are written as YAML for `vgrpo bench speed --config`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio.bench import markdown_table
from studio.bench.speed import evaluate_snapshots, train_with_budget
from trainer_core.config import TrainConfig, dump_config, from_dict, to_dict
from trainer_core.shapes.evaluation import SamplingConfig
from trainer_core.shapes.prompt_sets import heldout_subset

#: method -> its two most important knobs (config path -> the two values probed)
TUNING_KNOBS: dict[str, dict[str, tuple[float, float]]] = {
    "vgrpo": {"vgrpo.n_mc": (2, 4), "vgrpo.beta": (0.5, 2.0)},
    "flow-grpo": {"flow_grpo.clip_epsilon": (1e-4, 1e-3), "flow_grpo.beta": (0.0, 0.04)},
    "mix-grpo": {"flow_grpo.clip_epsilon": (1e-4, 1e-3), "flow_grpo.minibatches": (2, 4)},
    "diffusion-nft": {"nft.beta": (0.1, 1.0), "nft.timesteps": (2, 4)},
    "naive-elbo": {"vgrpo.n_mc": (2, 4), "vgrpo.beta": (0.5, 2.0)},
}
LR_FACTORS = (0.5, 1.0, 2.0)
#: the training diagnostics kept per probe (those its method logs): their mean over its last quarter
DIAGNOSTICS = ("kl", "clip_fraction", "ratio_abs_dev", "grad_norm", "reward_mean")


def tuning_grid(
    config: TrainConfig, knobs: dict[str, tuple[float, ...]], lr_factors: tuple[float, ...] = LR_FACTORS
) -> list[dict[str, float]]:
    """The probes' overrides: every learning rate x every combination of the knobs' values."""
    rates = [config.optimizer.learning_rate * factor for factor in lr_factors]
    names = list(knobs)
    return [
        {"optimizer.learning_rate": rate, **dict(zip(names, values, strict=True))}
        for rate, *values in itertools.product(rates, *(knobs[name] for name in names))
    ]


def with_lr_schedule(config: TrainConfig, lr_schedule: str) -> TrainConfig:
    """`config` with the learning-rate schedule every probe of a tuning run shares."""
    return dataclasses.replace(config, optimizer=dataclasses.replace(config.optimizer, lr_schedule=lr_schedule))


def with_overrides(config: TrainConfig, overrides: dict[str, object]) -> TrainConfig:
    """`config` with dotted `section.field` values replaced (validated as any config is)."""
    data = to_dict(config)
    for path, value in overrides.items():
        *sections, name = path.split(".")
        node = data
        for section in sections:
            node = node[section]
        node[name] = value
    return from_dict(TrainConfig, data)


def tune(
    configs: dict[str, TrainConfig],
    budget_minutes: float,
    seeds: list[int],
    lr_schedule: str = "constant",
    eval_per_category: int = 20,
    eval_seeds: int = 2,
    knobs: dict[str, dict[str, tuple[float, ...]]] | None = None,
    lr_factors: tuple[float, ...] = LR_FACTORS,
    finished: list[dict[str, object]] | None = None,
    on_progress: Callable[[list[dict[str, object]]], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Run every method's grid (`configs`: method -> its preset, schedule set to `lr_schedule` for all).
    `finished` holds probes of an interrupted run (same settings), which are not trained again."""
    knobs = knobs or TUNING_KNOBS
    specs, sampling = heldout_subset(eval_per_category), SamplingConfig()
    done = {(str(p["method"]), int(p["probe"]), int(p["seed"])): p for p in finished or []}  # type: ignore[call-overload]
    results: dict[str, object] = {}
    for method, preset in configs.items():
        base = with_lr_schedule(preset, lr_schedule)
        probes, grid = [], tuning_grid(base, knobs[method], lr_factors)
        for index, overrides in enumerate(grid):
            config = with_overrides(base, overrides)
            accuracies, diagnostics = [], []
            for seed in seeds:
                key = (method, index, seed)
                if key not in done:
                    log(f"[{method} probe {index} seed {seed}] {overrides}")
                    run = train_with_budget(dataclasses.replace(config, seed=seed), budget_minutes * 60, marks=1)
                    final = run.snapshots[-1:]
                    evaluate_snapshots(run.adapter, final, run.states[-1:], specs, eval_seeds, sampling)
                    tail = run.history[-max(1, len(run.history) // 4) :]
                    done[key] = {
                        "method": method,
                        "probe": index,
                        "seed": seed,
                        "accuracy": final[0].accuracy,
                        "iterations": final[0].iteration,
                        **{k: float(np.mean([m[k] for m in tail])) for k in DIAGNOSTICS if k in tail[0]},
                    }
                    if on_progress is not None:
                        on_progress(list(done.values()))
                accuracies.append(float(done[key]["accuracy"]))  # type: ignore[arg-type]
                diagnostics.append(done[key])
            probes.append(
                {
                    "probe": index,
                    **overrides,
                    "accuracy_mean": float(np.mean(accuracies)),
                    "accuracies": accuracies,
                    **{
                        k: float(np.mean([d[k] for d in diagnostics]))
                        for k in (*DIAGNOSTICS, "iterations")
                        if k in diagnostics[0]
                    },
                }
            )
        best = max(probes, key=lambda p: (p["accuracy_mean"], -p["probe"]))
        results[method] = {
            "probes": probes,
            "best": best["probe"],
            "config": to_dict(with_overrides(base, grid[best["probe"]])),
        }
    return {
        "benchmark": "tune",
        "budget_minutes": budget_minutes,
        "seeds": seeds,
        "lr_schedule": lr_schedule,
        "lr_factors": list(lr_factors),
        "knobs": {m: {k: list(v) for k, v in knobs[m].items()} for m in configs},
        "evaluation": {"prompts": len(specs), "per_category": eval_per_category, "seeds": eval_seeds},
        "methods": results,
    }


def write_tuning_report(report: dict[str, object], out: Path) -> str:
    """tuning.md (every probe, the chosen one in bold) and METHOD.yaml per method; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        f"Every method: learning rate x {report['lr_factors']} of its preset's, x its two knobs; "
        f"{report['budget_minutes']} min per probe and seed, seeds {report['seeds']}, schedule "
        f"{report['lr_schedule']}; held-out accuracy on {report['evaluation']['prompts']} prompts x "  # type: ignore[index]
        f"{report['evaluation']['seeds']} seeds."  # type: ignore[index]
    ]
    for method, result in report["methods"].items():  # type: ignore[attr-defined]
        columns = [k for k in result["probes"][0] if k not in ("accuracies",)]
        rows = [
            {k: f"**{_format(p[k])}**" if p["probe"] == result["best"] else _format(p[k]) for k in columns}
            for p in result["probes"]
        ]
        sections.append(f"## {method}\n\n" + markdown_table(rows, columns))
        (out / f"{method}.yaml").write_text(dump_config(from_dict(TrainConfig, result["config"])))
    markdown = "\n\n".join(sections) + "\n"
    (out / "tuning.md").write_text(markdown)
    return markdown


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
