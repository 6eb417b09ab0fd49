"""`vgrpo bench speed`: V-GRPO against the MDP baselines under one wall-clock budget.

Every method trains on the shapes world from its own tuned preset (same model, rewards, LoRA
targets, prompt sampler and seeds) for the same budget of training wall-clock time. The LoRA is
snapshotted at evenly spaced marks of training time (evaluation is not counted) and every
snapshot is evaluated afterwards on a stratified part of the held-out set. The target is the
best held-out accuracy of Flow-GRPO's curve averaged over seeds; the time, gradient steps and
model evaluations (NFE, a backward counting as two) at which each method's mean curve first reaches
it give the speedups. Each seed's own first crossing is reported too, with its spread; it is the
noisier reading (one evaluation of a single seed can cross the target by chance), so it is not the
one the speedups use. Every mean curve is also read at base + 2 standard errors of the evaluation
(`noise_clear_level`), which does not depend on where Flow-GRPO's curve happens to peak.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from studio.bench import device_name, format_rows, markdown_table, write_report
from studio.training import build_rewards
from trainer_core.adapters import load_model, resolve_device
from trainer_core.adapters.base import DenoiserAdapter
from trainer_core.algorithms import make_trainer
from trainer_core.config import TrainConfig, load_config, load_preset, to_dict
from trainer_core.shapes.evaluation import SamplingConfig, evaluate
from trainer_core.shapes.grammar import SceneSpec
from trainer_core.shapes.prompt_sets import heldout_subset

#: method -> its tuned preset on the shapes world
METHOD_PRESETS = {
    "vgrpo": "shapes-geneval",
    "flow-grpo": "shapes-geneval-flow-grpo",
    "mix-grpo": "shapes-geneval-mix-grpo",
    "diffusion-nft": "shapes-geneval-diffusion-nft",
    "naive-elbo": "shapes-geneval-naive-elbo",
}
TARGET_METHOD = "flow-grpo"

LoraState = dict[str, torch.Tensor]


@dataclass
class Snapshot:
    """The LoRA at one mark of training time, and what it cost to get there."""

    mark: int  # 0 is the base model; mark k is the first iteration boundary after k * budget / marks
    wall_s: float
    iteration: int
    gradient_steps: int
    nfe: int
    train_reward: float  # mean training reward of the iterations since the previous snapshot
    accuracy: float | None = None


def lora_state(adapter: DenoiserAdapter) -> LoraState:
    return {n: p.detach().clone() for n, p in adapter.denoiser.named_parameters() if "lora_" in n}


@torch.no_grad()
def load_lora_state(adapter: DenoiserAdapter, state: LoraState) -> None:
    params = dict(adapter.denoiser.named_parameters())
    for name, value in state.items():
        params[name].copy_(value)


@dataclass
class BudgetRun:
    adapter: DenoiserAdapter
    snapshots: list[Snapshot]
    states: list[LoraState]  # the LoRA at each snapshot
    history: list[dict[str, float]]  # every iteration's metrics


def train_with_budget(config: TrainConfig, budget_s: float, marks: int, max_iterations: int | None = None) -> BudgetRun:
    """Train until `budget_s` seconds of iteration time are spent (or `max_iterations` are done),
    snapshotting the LoRA at `marks` evenly spaced marks of training time and at the end."""
    adapter = load_model(config.model)
    trainer = make_trainer(adapter, build_rewards(config), config)
    snapshots, states = [Snapshot(0, 0.0, 0, 0, 0, math.nan)], [lora_state(adapter)]
    wall, steps, nfe, rewards = 0.0, 0, 0, []
    history: list[dict[str, float]] = []
    next_mark = 1

    def done() -> bool:
        return wall >= budget_s or (max_iterations is not None and trainer.iteration >= max_iterations)

    while not done():
        metrics = trainer.step(wall / budget_s)  # a decaying learning rate decays over the budget
        wall += metrics["iteration_s"]
        steps += trainer.gradient_steps
        nfe += int(metrics["nfe"])
        rewards.append(metrics["reward_mean"])
        history.append(metrics)
        if done() or wall >= next_mark * budget_s / marks:
            mark = marks if done() else math.floor(wall * marks / budget_s)
            snapshots.append(Snapshot(mark, wall, trainer.iteration, steps, nfe, float(np.mean(rewards))))
            states.append(lora_state(adapter))
            rewards = []
            next_mark = mark + 1
    return BudgetRun(adapter, snapshots, states, history)


def evaluate_snapshots(
    adapter: DenoiserAdapter,
    snapshots: list[Snapshot],
    states: list[LoraState],
    specs: list[SceneSpec],
    seeds: int,
    sampling: SamplingConfig,
    base_accuracy: float | None = None,
) -> None:
    """Fill in every snapshot's held-out accuracy (overall, GenEval style). `base_accuracy`, when
    known, is the untrained model's (mark 0: a LoRA whose B is zero changes nothing) and is not
    evaluated again."""
    for snapshot, state in zip(snapshots, states, strict=True):
        if snapshot.mark == 0 and base_accuracy is not None:
            snapshot.accuracy = base_accuracy
            continue
        load_lora_state(adapter, state)
        snapshot.accuracy = evaluate(adapter, specs, seeds, sampling).accuracy["overall"]


def first_reaching(snapshots: list[Snapshot], target: float) -> Snapshot | None:
    """The first trained snapshot (mark >= 1) at or above the target."""
    return next((s for s in snapshots[1:] if s.accuracy is not None and s.accuracy >= target - 1e-9), None)


def _spread(values: list[float | None]) -> dict[str, object]:
    reached = [v for v in values if v is not None]
    return {
        "mean": float(np.mean(reached)) if reached else None,
        "std": float(np.std(reached)) if reached else None,
        "per_seed": values,
        "reached": f"{len(reached)}/{len(values)}",
    }


def mean_curve(runs: list[list[Snapshot]], marks: int) -> list[dict[str, float]]:
    """Means over seeds per mark (marks every seed reached): accuracy and what it cost."""
    curve = []
    for mark in range(marks + 1):
        at = [next((s for s in run if s.mark == mark), None) for run in runs]
        if all(a is not None for a in at):
            point: dict[str, float] = {"mark": mark}
            for key in ("wall_s", "gradient_steps", "nfe", "accuracy"):
                point[key] = float(np.mean([getattr(a, key) for a in at]))
            curve.append(point)
    return curve


def curve_reaching(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first trained point (mark >= 1) of a mean curve at or above the target."""
    return next((p for p in curve if p["mark"] >= 1 and p["accuracy"] >= target - 1e-9), None)


def method_configs(
    methods: list[str], model: str | None = None, device: str = "auto", files: dict[str, Path] | None = None
) -> dict[str, TrainConfig]:
    """Each method's tuned preset, or the YAML config `files` names for it, with an unbounded iteration
    count (the budget stops it)."""
    files = files or {}
    unknown = [m for m in [*methods, *files] if m not in METHOD_PRESETS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown[0]!r}; allowed: {', '.join(METHOD_PRESETS)}")
    unused = [m for m in files if m not in methods]
    if unused:
        raise ValueError(f"--config: {unused[0]!r} is not among --methods ({', '.join(methods)})")
    configs = {}
    for method in methods:
        config = load_config(files[method]) if method in files else load_preset(METHOD_PRESETS[method])
        if config.algorithm != method:
            raise ValueError(f"--config: {files[method]} trains algorithm {config.algorithm!r}, not {method!r}")
        model_config = dataclasses.replace(config.model, name=model or config.model.name, device=device)
        configs[method] = dataclasses.replace(config, iterations=10**6, model=model_config)
    return configs


def summarize_runs(
    runs: dict[str, list[list[Snapshot]]], seeds: list[int], marks: int
) -> tuple[dict[str, object], dict[str, float], dict[str, dict[str, object]]]:
    """(target, speedups of V-GRPO, per-method summary) from every run's evaluated snapshots.

    The target is Flow-GRPO's best mean accuracy after training started. When that is not above the
    base model's accuracy, Flow-GRPO did not learn within the budget: there is nothing to be faster
    at, and no speedup is reported. Speedups compare where the mean curves first reach the target;
    `per_seed_speedup_of_vgrpo` compares the means of each seed's first crossing instead.
    """
    target_curve = mean_curve(runs[TARGET_METHOD], marks)
    base = float(np.mean([run[0].accuracy for method_runs in runs.values() for run in method_runs]))
    best = max((point["accuracy"] for point in target_curve[1:]), default=math.nan)
    improves = bool(best > base)
    summaries: dict[str, dict[str, object]] = {}
    for method, method_runs in runs.items():
        hits = [first_reaching(run, best) if improves else None for run in method_runs]
        curve = mean_curve(method_runs, marks)
        summaries[method] = {
            "runs": [
                {"seed": s, "snapshots": [dataclasses.asdict(p) for p in run]}
                for s, run in zip(seeds, method_runs, strict=True)
            ],
            "mean_curve": curve,
            "mean_curve_to_target": curve_reaching(curve, best) if improves else None,
            "time_to_target_s": _spread([h.wall_s if h else None for h in hits]),
            "gradient_steps_to_target": _spread([h.gradient_steps if h else None for h in hits]),
            "nfe_to_target": _spread([h.nfe if h else None for h in hits]),
            "final_accuracy": _spread([run[-1].accuracy for run in method_runs]),
            "best_accuracy": _spread([max(s.accuracy for s in run[1:]) for run in method_runs]),
            "iterations": _spread([run[-1].iteration for run in method_runs]),
        }
    target = {"method": TARGET_METHOD, "accuracy": best, "base_accuracy": base, "improves_on_base": improves}
    return target, vgrpo_speedups(summaries), summaries


def accuracy_standard_error(n_images: int, seeds: int) -> float:
    """An upper bound on the standard error of held-out accuracy averaged over `seeds` training runs,
    each evaluated on `n_images` images: every image passes or fails, and a pass rate's variance
    p(1 - p) / n is at most 1 / (4n) (category means of equal size share the bound). It counts the
    evaluation's noise only, not the spread between training seeds."""
    return math.sqrt(0.25 / (n_images * seeds))


def judge_target(target: dict[str, object], n_images: int, seeds: int) -> None:
    """Add to `target` how far it lies above the base model and whether that lift is clear of the
    evaluation's noise (at least two standard errors of the seed-averaged accuracy): a target inside
    the noise makes every time-to-target a reading of luck."""
    lift = float(target["accuracy"]) - float(target["base_accuracy"])  # type: ignore[arg-type]
    noise = accuracy_standard_error(n_images, seeds)
    target.update(lift_over_base=lift, standard_error=noise, clear_of_noise=bool(lift >= 2 * noise))


def vgrpo_speedups(summaries: dict[str, dict[str, object]], per_seed: bool = False) -> dict[str, float]:
    """Each other method's time to the target over V-GRPO's (methods that reached it): where the mean
    curves first reach it, or (`per_seed`) the means of each seed's first crossing."""

    def time_to_target(summary: dict[str, object]) -> float | None:
        if per_seed:
            return summary["time_to_target_s"]["mean"]  # type: ignore[index]
        hit = summary["mean_curve_to_target"]
        return hit["wall_s"] if hit else None  # type: ignore[index]

    return speedups_over_vgrpo({m: time_to_target(s) for m, s in summaries.items()})


def speedups_over_vgrpo(times: dict[str, float | None]) -> dict[str, float]:
    """Each other method's time over V-GRPO's, for the methods with a time (none without V-GRPO's)."""
    vgrpo_time = times.get("vgrpo")
    if not vgrpo_time:
        return {}
    return {m: t / vgrpo_time for m, t in times.items() if m != "vgrpo" and t}


def speedups_at_level(summaries: dict[str, dict[str, object]], level: float) -> dict[str, object]:
    """Where each method's mean curve first reaches `level` (time, gradient steps, NFE), and V-GRPO's
    ratio over each method that does, in each of the three.

    Read at base + 2 standard errors (`noise_clear_level`) this does not hang on where Flow-GRPO's
    curve happens to peak: a target inside the evaluation noise makes the target's speedups partly
    luck, and this reading is the one to quote then."""
    hits = {method: curve_reaching(summary["mean_curve"], level) for method, summary in summaries.items()}  # type: ignore[arg-type]

    def cost(key: str) -> dict[str, float | None]:
        return {method: hit[key] if hit else None for method, hit in hits.items()}

    return {
        "accuracy": level,
        "time_s": cost("wall_s"),
        "gradient_steps": cost("gradient_steps"),
        "nfe": cost("nfe"),
        "speedup_of_vgrpo": speedups_over_vgrpo(cost("wall_s")),
        "gradient_step_ratio_of_vgrpo": speedups_over_vgrpo(cost("gradient_steps")),
        "nfe_ratio_of_vgrpo": speedups_over_vgrpo(cost("nfe")),
    }


def common_level(summaries: dict[str, dict[str, object]]) -> float:
    """The highest held-out accuracy every method's mean curve reaches after training starts: the
    lowest of their peaks. Read there, every method has a time to it, whichever learns least."""
    return min(max(p["accuracy"] for p in s["mean_curve"] if p["mark"] >= 1) for s in summaries.values())  # type: ignore[union-attr, index]


def snapshots_from_report(report: dict[str, object]) -> dict[str, list[list[Snapshot]]]:
    """The runs of a written speed.json, to summarise them again."""
    return {
        method: [[Snapshot(**p) for p in run["snapshots"]] for run in result["runs"]]
        for method, result in report["methods"].items()  # type: ignore[union-attr]
    }


def speed_settings(
    configs: dict[str, TrainConfig], budget_minutes: float, marks: int, eval_per_category: int, eval_seeds: int
) -> dict[str, object]:
    """What a run's snapshots depend on besides its method and seed: runs measured under other
    settings (another budget, evaluation, device or config) are not comparable and are not resumed."""
    device = next(iter(configs.values())).model.device
    settings = {
        "budget_s": budget_minutes * 60,
        "marks": marks,
        "evaluation": {"prompts": len(heldout_subset(eval_per_category)), "seeds": eval_seeds},
        "device": device_name(str(resolve_device(device))),
        "configs": {method: to_dict(config) for method, config in configs.items()},
    }
    return json.loads(json.dumps(settings))  # as a progress file stores it: tuples become lists


def resumable_runs(previous: dict[str, object], settings: dict[str, object]) -> list[dict[str, object]]:
    """The finished runs of an interrupted benchmark's progress file (`speed.progress.json`).

    Raises ValueError when they were measured under other settings, naming what differs."""
    if previous.get("benchmark") != "speed-progress":
        raise ValueError("the file exists and is not a speed benchmark's progress; choose another --out")
    stored: dict[str, object] = previous.get("settings", {})  # type: ignore[assignment]
    differing = [key for key in settings if stored.get(key) != settings[key]]
    if differing:
        raise ValueError(
            f"its finished runs were measured with other {', '.join(differing)}; "
            "choose another --out or delete the file to start afresh"
        )
    return list(previous.get("runs", []))  # type: ignore[arg-type]


def speed_benchmark(
    configs: dict[str, TrainConfig],
    budget_minutes: float,
    seeds: list[int],
    marks: int = 6,
    eval_per_category: int = 20,
    eval_seeds: int = 2,
    log: Callable[[str], None] = print,
    sources: dict[str, str] | None = None,
    finished: list[dict[str, object]] | None = None,
    on_progress: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, object]:
    """Run every method (`configs`: method -> its config) for every seed under the budget. `sources`
    names where a method's config came from when not from its preset (recorded in the report).

    Runs go seed by seed, every method within a seed, so a machine whose speed drifts over the hours
    of a benchmark slows every method alike rather than whichever runs last. `finished` holds runs of
    an interrupted benchmark under the same settings (see `resumable_runs`), which are not trained
    again; `on_progress` receives every finished run so far after each run."""
    if TARGET_METHOD not in configs:
        raise ValueError(f"--methods: must include {TARGET_METHOD}, whose best accuracy is the target")
    budget_s = budget_minutes * 60
    specs = heldout_subset(eval_per_category)
    sampling = SamplingConfig()
    settings = speed_settings(configs, budget_minutes, marks, eval_per_category, eval_seeds)
    done = {(run["method"], run["seed"]): run for run in finished or []}
    base_accuracy: dict[tuple[str, int | None], float] = {}  # per base model: its mark-0 accuracy
    for (method, _), run in done.items():
        if method in configs:
            model = configs[method].model
            base_accuracy[(model.name, model.resolution)] = run["snapshots"][0]["accuracy"]  # type: ignore[index]
    for seed in seeds:
        for method, config in configs.items():
            if (method, seed) in done:
                log(f"[{method} seed {seed}] kept from the interrupted run")
                continue
            log(f"[{method} seed {seed}] training for {budget_s:.0f} s")
            run = train_with_budget(dataclasses.replace(config, seed=seed), budget_s, marks)
            snapshots = run.snapshots
            log(f"[{method} seed {seed}] {snapshots[-1].iteration} iterations; evaluating {len(snapshots)} snapshots")
            model = (config.model.name, config.model.resolution)
            evaluate_snapshots(
                run.adapter, snapshots, run.states, specs, eval_seeds, sampling, base_accuracy.get(model)
            )
            base_accuracy[model] = snapshots[0].accuracy  # type: ignore[assignment]
            done[(method, seed)] = {
                "method": method,
                "seed": seed,
                "snapshots": [dataclasses.asdict(s) for s in snapshots],
            }
            log(f"[{method} seed {seed}] accuracy " + " ".join(f"{s.accuracy:.3f}" for s in snapshots))
            if on_progress is not None:
                on_progress({"benchmark": "speed-progress", "settings": settings, "runs": list(done.values())})

    runs = {
        method: [[Snapshot(**p) for p in done[(method, seed)]["snapshots"]] for seed in seeds]  # type: ignore[union-attr]
        for method in configs
    }
    results: dict[str, dict[str, object]] = {}
    for method, config in configs.items():
        source = (sources or {}).get(method)
        results[method] = {"preset": None if source else METHOD_PRESETS.get(method), "config": to_dict(config)}
        if source:
            results[method]["config_file"] = source
    target, speedups, summaries = summarize_runs(runs, seeds, marks)
    judge_target(target, len(specs) * eval_seeds, len(seeds))
    for method, summary in summaries.items():
        results[method].update(summary)
    per_seed_speedups = vgrpo_speedups(summaries, per_seed=True)
    noise_clear = float(target["base_accuracy"]) + 2 * float(target["standard_error"])  # type: ignore[arg-type]
    return {
        "benchmark": "speed",
        "device": settings["device"],
        "budget_s": budget_s,
        "seeds": seeds,
        "marks": marks,
        "evaluation": {
            "prompts": len(specs),
            "per_category": eval_per_category,
            "seeds": eval_seeds,
            "sampling": dataclasses.asdict(sampling),
        },
        "target": target,
        "methods": results,
        "speedup_of_vgrpo": speedups,
        "per_seed_speedup_of_vgrpo": per_seed_speedups,
        "noise_clear_level": speedups_at_level(summaries, noise_clear),
        "common_level": speedups_at_level(summaries, common_level(summaries)),
    }


def _format_spread(spread: dict[str, object], digits: int = 0) -> str:
    """'mean ± std', with how many seeds reached the target when not all did."""
    reached, total = str(spread["reached"]).split("/")
    if spread["mean"] is None:
        return f"not reached ({spread['reached']})"
    text = f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"
    return text if reached == total else f"{text} ({spread['reached']} seeds)"


def _ratio(speedups: dict[str, float], method: str) -> str:
    return f"{speedups[method]:.1f}x" if method in speedups else ("1x" if method == "vgrpo" else "-")


def _speedup_note(speedups: dict[str, float], method: str) -> str:
    return f" (V-GRPO {speedups[method]:.1f}x faster)" if method in speedups else ""


def speed_rows(report: dict[str, object]) -> list[dict[str, object]]:
    base = report["target"]["base_accuracy"]  # type: ignore[index]
    rows = []
    for method, result in report["methods"].items():  # type: ignore[union-attr]
        hit = result.get("mean_curve_to_target")  # absent from reports written before it existed
        rows.append(
            {
                "method": method,
                "time_to_target_s": f"{hit['wall_s']:.0f}" if hit else "not reached",
                "gradient_steps": f"{hit['gradient_steps']:.0f}" if hit else "-",
                "nfe_to_target": f"{hit['nfe']:.0f}" if hit else "-",
                "per_seed_time_s": _format_spread(result["time_to_target_s"]),
                "final_accuracy": _format_spread(result["final_accuracy"], 3),
                "final_over_base": f"{result['final_accuracy']['mean'] - base:+.3f}",
                "best_accuracy": _format_spread(result["best_accuracy"], 3),
                "vgrpo_speedup": _ratio(report["speedup_of_vgrpo"], method),  # type: ignore[arg-type]
                "per_seed_speedup": _ratio(report.get("per_seed_speedup_of_vgrpo", {}), method),  # type: ignore[arg-type]
            }
        )
    return rows


SPEED_COLUMNS = [
    "method",
    "time_to_target_s",
    "gradient_steps",
    "nfe_to_target",
    "per_seed_time_s",
    "final_accuracy",
    "final_over_base",
    "best_accuracy",
    "vgrpo_speedup",
    "per_seed_speedup",
]


def level_rows(level: dict[str, object]) -> list[dict[str, object]]:
    """One row per method: what its mean curve spent to reach `level`, and V-GRPO's ratio in each."""

    def ratio(key: str, method: str) -> str:
        return _ratio(level[key], method)  # type: ignore[arg-type]

    return [
        {
            "method": method,
            "time_s": f"{time:.0f}" if time is not None else "not reached",
            "gradient_steps": f"{level['gradient_steps'][method]:.0f}" if time is not None else "-",  # type: ignore[index]
            "nfe": f"{level['nfe'][method]:.0f}" if time is not None else "-",  # type: ignore[index]
            "vgrpo_time_ratio": ratio("speedup_of_vgrpo", method),
            "vgrpo_gradient_step_ratio": ratio("gradient_step_ratio_of_vgrpo", method),
            "vgrpo_nfe_ratio": ratio("nfe_ratio_of_vgrpo", method),
        }
        for method, time in level["time_s"].items()  # type: ignore[attr-defined]
    ]


LEVEL_COLUMNS = [
    "method",
    "time_s",
    "gradient_steps",
    "nfe",
    "vgrpo_time_ratio",
    "vgrpo_gradient_step_ratio",
    "vgrpo_nfe_ratio",
]


def plot_accuracy_vs_time(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for method, result in report["methods"].items():  # type: ignore[union-attr]
        curve = result["mean_curve"]
        (line,) = ax.plot([p["wall_s"] for p in curve], [p["accuracy"] for p in curve], marker="o", label=method)
        for run in result["runs"]:
            points = run["snapshots"]
            ax.plot([p["wall_s"] for p in points], [p["accuracy"] for p in points], color=line.get_color(), alpha=0.25)
    target = report["target"]  # type: ignore[index]
    ax.axhline(target["accuracy"], color="gray", linestyle="--", linewidth=1, label=f"target ({TARGET_METHOD} best)")
    if "standard_error" in target:
        base, noise = target["base_accuracy"], 2 * target["standard_error"]
        ax.axhspan(base - noise, base + noise, color="gray", alpha=0.12, label="base ± 2 s.e. (evaluation noise)")
    ax.set_xlabel("training wall-clock (s)")
    ax.set_ylabel("held-out accuracy (overall)")
    ax.set_title(f"shapes world, {report['device']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_speed_report(report: dict[str, object], out: Path) -> str:
    """speed.json, accuracy_vs_wall_clock.png and speed.md in `out`; returns the markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out / "speed.json")
    plot_accuracy_vs_time(report, out / "accuracy_vs_wall_clock.png")
    table = markdown_table(speed_rows(report), SPEED_COLUMNS)
    target = report["target"]  # type: ignore[index]
    verdict = (
        f"Target: {TARGET_METHOD}'s best mean held-out accuracy after training started, {target['accuracy']:.3f} "
        f"(base model {target['base_accuracy']:.3f}). Time, gradient steps and NFE to target: where the curve "
        "averaged over seeds first reaches it; per-seed: each seed's first crossing, mean ± std."
        if target["improves_on_base"]
        else f"{TARGET_METHOD} did not improve on the base model ({target['base_accuracy']:.3f}) within the budget "
        f"(best {target['accuracy']:.3f}), so there is no target to reach and no speedup."
    )
    if target["improves_on_base"] and "standard_error" in target:  # absent from reports written before it
        verdict += (
            f" The target lies {target['lift_over_base']:.3f} above the base; the evaluation's standard error "
            f"of a seed-averaged accuracy is at most {target['standard_error']:.3f}, so the target is "
            + ("clear of" if target["clear_of_noise"] else "**inside**")
            + " the evaluation noise (two standard errors)."
        )
    level = report.get("noise_clear_level")  # absent from reports written before it
    if level:
        times = ", ".join(
            f"{m} " + (f"{t:.0f} s" if t else "not reached") + _speedup_note(level["speedup_of_vgrpo"], m)
            for m, t in level["time_s"].items()
        )
        verdict += (
            f" Read at base + 2 standard errors, {level['accuracy']:.3f} (clear of the evaluation noise whatever "
            f"{TARGET_METHOD}'s peak), the mean curves first get there at: {times}."
        )
    setup = f"Budget {report['budget_s']:.0f} s per run, seeds {report['seeds']}, {report['device']}."
    markdown = f"{setup} {verdict}\n\n{table}\n"
    common = report.get("common_level")  # absent from reports written before it
    if common:
        markdown += (
            f"\nAt the highest level every method's mean curve reaches, {common['accuracy']:.3f} (the lowest of "
            "their peaks), what each spent to first reach it, and V-GRPO's ratio (the other method's cost over "
            f"V-GRPO's):\n\n{markdown_table(level_rows(common), LEVEL_COLUMNS)}\n"
        )
    (out / "speed.md").write_text(markdown)
    return format_rows(speed_rows(report), SPEED_COLUMNS)
