"""`vgrpo bench ablation`: V-GRPO's knobs one at a time, from the shapes-geneval preset.

Each variant changes one thing (docs/method.md §3-5): the number of (t, eps) pairs, each
variance reduction off in turn, the surrogate's parameterisation, and the step control (ratio
clip, soft clip on-policy, penalty to theta_old). It trains for a fixed number of iterations and
reports held-out accuracy (stratified subset) and the mean within-group surrogate CV.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio.bench import device_name, markdown_table, write_report
from studio.bench.speed import accuracy_standard_error, train_with_budget
from trainer_core.adapters import resolve_device
from trainer_core.config import TrainConfig, load_preset
from trainer_core.shapes.evaluation import SamplingConfig, evaluate
from trainer_core.shapes.prompt_sets import heldout_subset

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


def ablation_settings(iterations: int, seed: int, eval_per_category: int, eval_seeds: int) -> dict[str, object]:
    """What a row's numbers depend on besides its variant: rows measured under other settings don't mix."""
    return {
        "preset": "shapes-geneval",
        "iterations": iterations,
        "seed": seed,
        "evaluation": {"prompts": len(heldout_subset(eval_per_category)), "seeds": eval_seeds},
    }


def resumable_rows(previous: dict[str, object], settings: dict[str, object]) -> list[dict[str, object]]:
    """The rows of an earlier (possibly interrupted) report that this run can keep.

    Raises ValueError when the earlier report was measured under other settings: continuing would
    overwrite it with a table whose rows are not comparable.
    """
    if previous.get("benchmark") != "ablation":
        raise ValueError("--out: the file exists and is not an ablation report; choose another --out")
    stored = {k: previous.get(k) for k in settings}
    if stored != settings:
        differing = ", ".join(f"{k}={stored[k]} (now {settings[k]})" for k in settings if stored[k] != settings[k])
        raise ValueError(f"--out: the file holds an ablation measured with {differing}; choose another --out")
    return list(previous.get("results", []))


def ablation_benchmark(
    variants: list[str],
    iterations: int,
    seed: int = 0,
    eval_per_category: int = 20,
    eval_seeds: int = 2,
    base: TrainConfig | None = None,
    log: Callable[[str], None] = print,
    measured: list[dict[str, object]] | None = None,
    on_progress: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, object]:
    """Train and evaluate each variant in turn.

    `measured` holds rows of an earlier run under the same settings (see `resumable_rows`); their
    variants are not trained again, and rows of variants outside `variants` stay in the report.
    `on_progress` receives the report after every variant, so an interrupted run keeps what it finished.
    """
    base = base or load_preset("shapes-geneval")
    configs = {v: dataclasses.replace(variant_config(base, v, iterations), seed=seed) for v in variants}
    specs = heldout_subset(eval_per_category)
    done = {row["variant"]: row for row in measured or []}

    def report() -> dict[str, object]:
        order = list(VARIANTS) + [v for v in done if v not in VARIANTS]
        return {
            "benchmark": "ablation",
            "device": device_name(str(resolve_device(base.model.device))),
            **ablation_settings(iterations, seed, eval_per_category, eval_seeds),
            "complete": all(v in done for v in configs),
            "results": [done[v] for v in order if v in done],
        }

    for variant, config in configs.items():
        if variant in done:
            log(f"[{variant}] kept from the earlier run: accuracy {done[variant]['accuracy']}")
            continue
        log(f"[{variant}] {iterations} iterations")
        run = train_with_budget(config, math.inf, marks=1, max_iterations=iterations)
        history = run.history
        cvs = [m["surrogate_cv_within_group"] for m in history]
        accuracy = evaluate(run.adapter, specs, eval_seeds, SamplingConfig()).accuracy["overall"]
        done[variant] = {
            "variant": variant,
            "changes": VARIANTS[variant],
            "accuracy": round(accuracy, 4),
            "surrogate_cv_within_group": round(float(np.mean(cvs)), 4),
            "train_reward_last10": round(float(np.mean([m["reward_mean"] for m in history[-10:]])), 4),
            "wall_s": round(run.snapshots[-1].wall_s, 1),
        }
        log(f"[{variant}] accuracy {accuracy:.3f}, within-group CV {np.mean(cvs):.3f}")
        if on_progress is not None:
            on_progress(report())
    return report()


ABLATION_COLUMNS = ["variant", "accuracy", "surrogate_cv_within_group", "train_reward_last10", "wall_s"]


def ablation_markdown(report: dict[str, object]) -> str:
    """The table with what it was measured on, and the size of the evaluation's noise."""
    evaluation = report["evaluation"]  # type: ignore[index]
    n_images = evaluation["prompts"] * evaluation["seeds"]
    noise = accuracy_standard_error(n_images, seeds=1)
    status = "" if report.get("complete", True) else " (interrupted: rerun the same command to finish)"
    return "\n".join(
        [
            f"# Ablation of V-GRPO on {report['preset']}{status}",
            "",
            f"{report['iterations']} iterations per variant, training seed {report['seed']}, on {report['device']}; "
            f"held-out accuracy on {evaluation['prompts']} prompts x {evaluation['seeds']} evaluation seeds "
            f"({n_images} images: standard error at most {noise:.3f}, so accuracies closer than {2 * noise:.2f} "
            "are not told apart by one run). `surrogate_cv_within_group`: the mean over iterations of the "
            "surrogate's coefficient of variation within a group (lower: less noisy likelihood ratios).",
            "",
            markdown_table(report["results"], ABLATION_COLUMNS),  # type: ignore[arg-type]
            "",
        ]
    )


def write_ablation_report(report: dict[str, object], out: Path) -> None:
    """`out` (JSON) and the markdown table beside it (`out` with the suffix .md)."""
    write_report(report, out)
    out.with_suffix(".md").write_text(ablation_markdown(report))
