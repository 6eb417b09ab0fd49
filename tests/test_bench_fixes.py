"""`vgrpo bench fixes`: the variants each differ from "before" by one fix, shares of the gap, resuming."""

import dataclasses
import json

import pytest
import torch

import studio.bench.baseline_fixes as fixes_module
from studio.bench.baseline_fixes import (
    BASELINE_FIXES,
    PREVIOUS_BETA,
    fix_variants,
    fixes_benchmark,
    summarize_variants,
    variant_changes,
    write_fixes_report,
)
from studio.bench.speed import Snapshot, method_configs
from studio.cli import main
from trainer_core.config import RolloutConfig, load_preset, to_dict
from trainer_core.sde import reference_kl


def _flat(config) -> dict[str, object]:
    return {
        f"{section}.{k}": v
        for section, values in to_dict(config).items()
        if isinstance(values, dict)
        for k, v in values.items()
    }


def _differing(a, b) -> set[str]:
    flat_a, flat_b = _flat(a), _flat(b)
    return {key for key in flat_a if flat_a[key] != flat_b[key]}


@pytest.mark.parametrize("method", ["flow-grpo", "mix-grpo"])
def test_each_variant_is_before_with_exactly_one_fix_in_place(method):
    preset = load_preset(f"shapes-geneval-{method}")
    variants = fix_variants(method, preset)
    assert list(variants) == ["before", *(f"+{name}" for name in BASELINE_FIXES[method]), "after"]
    assert variants["after"] == preset
    before = variants["before"]
    assert before.flow_grpo.minibatches == 1 and before.flow_grpo.beta == pytest.approx(0.4)
    if method == "mix-grpo":
        assert not before.rollout.same_noise_in_group
        assert (before.mix_grpo.window_interval, before.mix_grpo.window_last_start) == (25, 1.0)
    fixed_fields = {
        "kl": {"flow_grpo.beta"},
        "minibatches": {"flow_grpo.minibatches"},
        "same_noise_in_group": {"rollout.same_noise_in_group"},
        "window_schedule": {"mix_grpo.window_interval", "mix_grpo.window_last_start"},
    }
    for name in BASELINE_FIXES[method]:
        variant = variants[f"+{name}"]
        assert _differing(before, variant) == fixed_fields[name], name
        assert all(_flat(variant)[key] == _flat(preset)[key] for key in fixed_fields[name])
    assert _differing(before, preset) == set().union(*(fixed_fields[name] for name in BASELINE_FIXES[method]))
    changes = variant_changes(variants)
    assert changes["before"] == ""
    assert changes["+minibatches"] == f"flow_grpo.minibatches 1 -> {preset.flow_grpo.minibatches}"
    assert changes["+kl"] == f"flow_grpo.beta 0.4 -> {preset.flow_grpo.beta}"


def test_the_former_kl_weight_is_the_same_penalty_in_todays_units():
    # before the fix: beta 0.04 x |mu - mu_ref|^2 / (2 s_t^2 |dt|); on the uniform 10-step grid |dt| = 0.1
    preset = load_preset("shapes-geneval-flow-grpo")
    steps = preset.rollout.steps
    mean, mean_ref, sigma, dt = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), 0.83, 1 / steps
    former = PREVIOUS_BETA * ((mean - mean_ref) ** 2 / (2 * sigma**2 * dt)).flatten(1).mean(1)
    today = fix_variants("flow-grpo", preset)["before"].flow_grpo.beta * reference_kl(mean, mean_ref, sigma)
    torch.testing.assert_close(today, former)


def _run(accuracies: list[float], reward: float = 0.5) -> list[Snapshot]:
    return [Snapshot(i, 60.0 * i, 5 * i, 5 * i, 100 * i, reward, a) for i, a in enumerate(accuracies)]


def test_a_fixs_share_is_the_part_of_the_after_minus_before_gap_it_recovers(tmp_path):
    runs = {
        "before": [_run([0.5, 0.5, 0.52]), _run([0.5, 0.52, 0.5])],  # mean over marks 0.51
        "+kl": [_run([0.5, 0.56, 0.58]), _run([0.5, 0.54, 0.56])],  # 0.56
        "+minibatches": [_run([0.5, 0.48, 0.5]), _run([0.5, 0.5, 0.5])],  # 0.495
        "after": [_run([0.5, 0.58, 0.62], 0.8), _run([0.5, 0.6, 0.64], 0.8)],  # 0.61
    }
    rows = {row["variant"]: row for row in summarize_variants(runs, marks=2)}
    assert rows["before"]["share_of_gap"] == 0 and rows["after"]["share_of_gap"] == pytest.approx(1)
    assert rows["+kl"]["share_of_gap"] == pytest.approx(0.5)
    assert rows["+minibatches"]["share_of_gap"] == pytest.approx(-0.15)
    assert rows["after"]["final_accuracy"] == pytest.approx(0.63) and rows["after"]["last_train_reward"] == 0.8
    report = {
        "budget_s": 120,
        "seeds": [0, 1],
        "base_accuracy": 0.5,
        "evaluation": {"prompts": 100, "seeds": 2},
        "methods": {"flow-grpo": {"variants": list(rows.values())}},
    }
    markdown = write_fixes_report(report, tmp_path)
    assert "| +kl | - | 0.560 | 0.570 ± 0.010 | 0.500 | +0.50 |" in markdown
    assert (
        json.loads((tmp_path / "fixes.json").read_text())["methods"]["flow-grpo"]["variants"][0]["variant"] == "before"
    )


def test_every_variant_trains_is_evaluated_and_an_interrupted_run_resumes(tiny_model, monkeypatch):
    small = RolloutConfig(prompts_per_iteration=2, group_size=4, steps=4, solver="euler", batch_size=16)
    configs = {
        m: dataclasses.replace(c, rollout=small) for m, c in method_configs(["flow-grpo"], tiny_model, "cpu").items()
    }
    saved: list[list[dict]] = []
    report = fixes_benchmark(
        configs, budget_minutes=1e-4, seeds=[0], marks=1, eval_per_category=1, eval_seeds=1,
        on_progress=saved.append, log=lambda _: None,
    )  # fmt: skip
    result = report["methods"]["flow-grpo"]
    assert [row["variant"] for row in result["variants"]] == ["before", "+kl", "+minibatches", "after"]
    assert result["configs"]["before"]["flow_grpo"]["minibatches"] == 1
    for run in result["runs"]:
        snapshots = run["snapshots"]
        assert [s["mark"] for s in snapshots] == [0, 1] and snapshots[1]["iteration"] == 1
        assert all(0 <= s["accuracy"] <= 1 for s in snapshots)
    assert len({run["snapshots"][0]["accuracy"] for run in result["runs"]}) == 1  # one base model
    assert [len(runs) for runs in saved] == [1, 2, 3, 4]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was trained again")

    monkeypatch.setattr(fixes_module, "train_with_budget", no_training)
    again = fixes_benchmark(
        configs, budget_minutes=1e-4, seeds=[0], marks=1, eval_per_category=1, eval_seeds=1,
        finished=saved[-1], log=lambda _: None,
    )  # fmt: skip
    assert again["methods"]["flow-grpo"]["variants"] == result["variants"]


def test_the_cli_refuses_bad_arguments_and_a_progress_file_from_other_settings(tmp_path, capsys):
    assert main(["bench", "fixes", "--budget-minutes", "0", "--out", str(tmp_path)]) == 2
    assert "--budget-minutes: must be positive" in capsys.readouterr().err
    assert main(["bench", "fixes", "--budget-minutes", "1", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds, --marks, --eval-per-category, --eval-seeds: must be at least 1" in capsys.readouterr().err
    assert main(["bench", "fixes", "--budget-minutes", "1", "--methods", "vgrpo", "--out", str(tmp_path)]) == 2
    assert "--methods: no fixes to undo for 'vgrpo'; allowed: flow-grpo, mix-grpo" in capsys.readouterr().err
    progress = tmp_path / "fixes.progress.json"
    progress.write_text(json.dumps({"settings": {"budget_minutes": 5}, "runs": [{"kept": 1}]}))
    assert main(["bench", "fixes", "--budget-minutes", "1", "--out", str(tmp_path)]) == 2
    assert "from a run with other settings" in capsys.readouterr().err
    assert json.loads(progress.read_text())["runs"] == [{"kept": 1}]  # left as it was
