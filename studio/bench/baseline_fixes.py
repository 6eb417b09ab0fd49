"""`vgrpo bench fixes`: how much of a baseline's change each fix to it explains.

Flow-GRPO and MixGRPO were made faithful to their references by fixes that a config can undo
(`BASELINE_FIXES`). Each baseline trains from its config with every fix in place ("after"), with every
fix undone ("before"), and with each fix alone applied to "before"; all under one wall-clock budget,
with the seeds, snapshots and held-out evaluation of `vgrpo bench speed`. A fix's share is how much of
the after - before difference in mean held-out accuracy over the marks it recovers on its own.

Not undoable, so not in the table: the cap of the SDE's std at t = 1 (the numerator was capped too,
which shrank the first step's noise by sqrt(0.9)).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio.bench import markdown_table, write_report
from studio.bench.speed import Snapshot, evaluate_snapshots, mean_curve, train_with_budget
from studio.bench.tuning import with_overrides
from trainer_core.config import TrainConfig, to_dict
from trainer_core.shapes.evaluation import SamplingConfig
from trainer_core.shapes.prompt_sets import heldout_subset

#: the KL weight of the presets before the fix, whose penalty divided by the step's variance s_t^2 |dt|
PREVIOUS_BETA = 0.04


def previous_kl(config: TrainConfig) -> dict[str, object]:
    """The former penalty in today's units: over s_t^2 |dt| instead of s_t^2, which on a uniform grid of
    K steps (|dt| = 1/K, the shapes world's) is beta x K."""
    return {"flow_grpo.beta": PREVIOUS_BETA * config.rollout.steps}


#: method -> fix -> the overrides that undo it
BASELINE_FIXES: dict[str, dict[str, Callable[[TrainConfig], dict[str, object]]]] = {
    "flow-grpo": {
        "kl": previous_kl,
        "minibatches": lambda config: {"flow_grpo.minibatches": 1},
    },
    "mix-grpo": {
        "kl": previous_kl,  # the reference has no KL; ours had Flow-GRPO's, at the former strength
        "minibatches": lambda config: {"flow_grpo.minibatches": 1},
        "same_noise_in_group": lambda config: {"rollout.same_noise_in_group": False},
        "window_schedule": lambda config: {"mix_grpo.window_interval": 25, "mix_grpo.window_last_start": 1.0},
    },
}


def fix_variants(method: str, config: TrainConfig) -> dict[str, TrainConfig]:
    """The runs to compare: "before" (every fix undone), "+FIX" (only FIX in place) for each fix, and
    "after" (`config`)."""
    fixes = BASELINE_FIXES[method]
    undo = {name: undo_fix(config) for name, undo_fix in fixes.items()}

    def undone(except_fix: str | None) -> TrainConfig:
        overrides: dict[str, object] = {}
        for name, values in undo.items():
            if name != except_fix:
                overrides.update(values)
        return with_overrides(config, overrides)

    return {"before": undone(None), **{f"+{name}": undone(name) for name in fixes}, "after": config}


def variant_changes(variants: dict[str, TrainConfig]) -> dict[str, str]:
    """What each variant sets differently from "before", as `section.field before -> value` items."""
    before = _flat(variants["before"])
    changes = {}
    for name, config in variants.items():
        flat = _flat(config)
        changes[name] = ", ".join(f"{key} {before[key]} -> {flat[key]}" for key in flat if flat[key] != before[key])
    return changes


def _flat(config: TrainConfig) -> dict[str, object]:
    return {
        f"{section}.{field}": value
        for section, values in to_dict(config).items()
        if isinstance(values, dict)
        for field, value in values.items()
    }


def curve_area(curve: list[dict[str, float]]) -> float:
    """Mean held-out accuracy over the trained marks: how high and how early a run learns."""
    return float(np.mean([p["accuracy"] for p in curve if p["mark"] >= 1]))


def summarize_variants(runs: dict[str, list[list[Snapshot]]], marks: int) -> list[dict[str, object]]:
    """One row per variant: its mean curve, area, final accuracy and share of the after - before gap."""
    areas = {name: curve_area(mean_curve(variant_runs, marks)) for name, variant_runs in runs.items()}
    gap = areas["after"] - areas["before"]
    rows = []
    for name, variant_runs in runs.items():
        curve = mean_curve(variant_runs, marks)
        finals = [run[-1].accuracy for run in variant_runs]
        rows.append(
            {
                "variant": name,
                "mean_accuracy_over_marks": areas[name],
                "final_accuracy": float(np.mean(finals)),  # type: ignore[arg-type]
                "final_accuracy_std": float(np.std(finals)),  # type: ignore[arg-type]
                "last_train_reward": float(np.mean([run[-1].train_reward for run in variant_runs])),
                "share_of_gap": (areas[name] - areas["before"]) / gap if gap else None,
                "mean_curve": curve,
            }
        )
    return rows


def fixes_benchmark(
    configs: dict[str, TrainConfig],
    budget_minutes: float,
    seeds: list[int],
    marks: int = 6,
    eval_per_category: int = 20,
    eval_seeds: int = 2,
    finished: list[dict[str, object]] | None = None,
    on_progress: Callable[[list[dict[str, object]]], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Every variant of every baseline in `configs` (method -> its config with the fixes), every seed.
    `finished` holds runs of an interrupted benchmark with the same settings, which are not trained again."""
    specs, sampling = heldout_subset(eval_per_category), SamplingConfig()
    variants = {method: fix_variants(method, config) for method, config in configs.items()}
    done = {(str(r["method"]), str(r["variant"]), int(r["seed"])): r for r in finished or []}  # type: ignore[call-overload]
    base_accuracy = next((float(r["snapshots"][0]["accuracy"]) for r in done.values()), None)  # type: ignore[index]
    for seed in seeds:
        for method, method_variants in variants.items():
            for name, config in method_variants.items():
                if (method, name, seed) in done:
                    continue
                log(f"[{method} {name} seed {seed}] training for {budget_minutes * 60:.0f} s")
                run = train_with_budget(dataclasses.replace(config, seed=seed), budget_minutes * 60, marks)
                evaluate_snapshots(run.adapter, run.snapshots, run.states, specs, eval_seeds, sampling, base_accuracy)
                base_accuracy = run.snapshots[0].accuracy
                done[(method, name, seed)] = {
                    "method": method,
                    "variant": name,
                    "seed": seed,
                    "snapshots": [dataclasses.asdict(s) for s in run.snapshots],
                }
                log(f"[{method} {name} seed {seed}] accuracy " + " ".join(f"{s.accuracy:.3f}" for s in run.snapshots))
                if on_progress is not None:
                    on_progress(list(done.values()))
    results = {}
    for method, method_variants in variants.items():
        runs = {
            name: [[Snapshot(**p) for p in done[(method, name, seed)]["snapshots"]] for seed in seeds]  # type: ignore[union-attr]
            for name in method_variants
        }
        changes = variant_changes(method_variants)
        results[method] = {
            "variants": [{**row, "changes": changes[row["variant"]]} for row in summarize_variants(runs, marks)],
            "configs": {name: to_dict(config) for name, config in method_variants.items()},
            "runs": [r for r in done.values() if r["method"] == method],
        }
    return {
        "benchmark": "fixes",
        "budget_s": budget_minutes * 60,
        "seeds": seeds,
        "marks": marks,
        "base_accuracy": base_accuracy,
        "evaluation": {"prompts": len(specs), "per_category": eval_per_category, "seeds": eval_seeds},
        "methods": results,
    }


def fixes_markdown(report: dict[str, object]) -> str:
    """One table per baseline: every variant's accuracy, and the share of the gap each fix recovers."""
    columns = ["variant", "changes", "mean_accuracy_over_marks", "final_accuracy", "last_train_reward", "share_of_gap"]
    sections = [
        f"Budget {report['budget_s']:.0f} s per run, seeds {report['seeds']}, base accuracy "
        f"{report['base_accuracy']:.3f}; held-out accuracy on {report['evaluation']['prompts']} prompts x "  # type: ignore[index]
        f"{report['evaluation']['seeds']} seeds. share_of_gap: (variant - before) / (after - before) in mean "  # type: ignore[index]
        "accuracy over the marks."
    ]
    for method, result in report["methods"].items():  # type: ignore[attr-defined]
        rows = [
            {
                "variant": row["variant"],
                "changes": row.get("changes") or "-",
                "mean_accuracy_over_marks": f"{row['mean_accuracy_over_marks']:.3f}",
                "final_accuracy": f"{row['final_accuracy']:.3f} ± {row['final_accuracy_std']:.3f}",
                "last_train_reward": f"{row['last_train_reward']:.3f}",
                "share_of_gap": "-" if row["share_of_gap"] is None else f"{row['share_of_gap']:+.2f}",
            }
            for row in result["variants"]
        ]
        sections.append(f"## {method}\n\n" + markdown_table(rows, columns))
    return "\n\n".join(sections) + "\n"


def write_fixes_report(report: dict[str, object], out: Path) -> str:
    """fixes.json and fixes.md in `out`; returns the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_report(report, out / "fixes.json")
    markdown = fixes_markdown(report)
    (out / "fixes.md").write_text(markdown)
    return markdown
