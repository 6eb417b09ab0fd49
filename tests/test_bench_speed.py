"""`vgrpo bench speed` end to end on the tiny model: budgets, snapshots, target, report files."""

import dataclasses
import itertools
import json
import math

import pytest
from PIL import Image

import studio.bench.speed as speed_module
from studio.bench.speed import (
    Snapshot,
    common_level,
    first_reaching,
    judge_target,
    method_configs,
    resumable_runs,
    speed_benchmark,
    speed_settings,
    speedups_at_level,
    summarize_runs,
    vgrpo_speedups,
    write_speed_report,
)
from studio.cli import main
from trainer_core.config import MixGRPOConfig, RolloutConfig, dump_config, load_preset
from trainer_core.shapes.grammar import CATEGORIES
from trainer_core.shapes.prompt_sets import heldout_subset


def test_heldout_subset_is_stratified():
    specs = heldout_subset(3)
    assert len(specs) == 3 * len(CATEGORIES)
    assert sorted({s.category for s in specs}) == sorted(CATEGORIES)


def test_first_reaching_takes_the_earliest_snapshot_at_or_above_target():
    snaps = [Snapshot(i, 10.0 * i, i, 2 * i, 100 * i, 0.0, acc) for i, acc in enumerate([0.4, 0.5, 0.62, 0.6])]
    assert first_reaching(snaps, 0.6).mark == 2
    assert first_reaching(snaps, 0.7) is None


def _run(accuracies: list[float], seconds_per_mark: float) -> list[Snapshot]:
    return [Snapshot(i, seconds_per_mark * i, 5 * i, 10 * i, 1000 * i, 0.0, acc) for i, acc in enumerate(accuracies)]


def test_speedups_are_time_to_flow_grpos_best_accuracy():
    runs = {
        "vgrpo": [_run([0.5, 0.6, 0.7], 60), _run([0.5, 0.62, 0.68], 60)],
        "flow-grpo": [_run([0.5, 0.52, 0.6], 60), _run([0.5, 0.55, 0.6], 60)],
    }
    target, speedups, summaries = summarize_runs(runs, [0, 1], marks=2)
    assert target["accuracy"] == pytest.approx(0.6) and target["improves_on_base"]
    assert summaries["vgrpo"]["time_to_target_s"]["per_seed"] == [60, 60]
    assert summaries["flow-grpo"]["time_to_target_s"]["per_seed"] == [120, 120]
    assert speedups == {"flow-grpo": pytest.approx(2.0)}


def test_speedups_read_the_seed_averaged_curves_and_per_seed_crossings_are_kept():
    # Flow-GRPO's seed 0 crosses the target early by one lucky evaluation; its mean curve reaches it at mark 2
    runs = {
        "vgrpo": [_run([0.5, 0.6, 0.7], 60), _run([0.5, 0.62, 0.68], 60)],
        "flow-grpo": [_run([0.5, 0.62, 0.55], 60), _run([0.5, 0.5, 0.65], 60)],
    }
    target, speedups, summaries = summarize_runs(runs, [0, 1], marks=2)
    assert target["accuracy"] == pytest.approx(0.6)
    assert summaries["flow-grpo"]["mean_curve_to_target"]["wall_s"] == 120
    assert summaries["flow-grpo"]["mean_curve_to_target"]["nfe"] == 2000
    assert summaries["vgrpo"]["mean_curve_to_target"]["mark"] == 1
    assert speedups == {"flow-grpo": pytest.approx(2.0)}
    assert summaries["flow-grpo"]["time_to_target_s"]["per_seed"] == [60, 120]
    assert vgrpo_speedups(summaries, per_seed=True) == {"flow-grpo": pytest.approx(1.5)}


def test_no_speedup_when_flow_grpo_does_not_beat_the_base_model():
    runs = {"vgrpo": [_run([0.5, 0.6], 60)], "flow-grpo": [_run([0.5, 0.45], 60)]}
    target, speedups, summaries = summarize_runs(runs, [0], marks=1)
    assert not target["improves_on_base"] and speedups == {}
    assert summaries["vgrpo"]["time_to_target_s"]["reached"] == "0/1"


def test_a_target_within_two_standard_errors_of_the_base_is_flagged_as_noise(tmp_path):
    # 100 prompts x 2 evaluation seeds, 2 training seeds: standard error at most sqrt(1/4 / 400) = 0.025
    close = {"accuracy": 0.5125, "base_accuracy": 0.5, "improves_on_base": True}
    judge_target(close, n_images=200, seeds=2)
    assert close["standard_error"] == pytest.approx(0.025)
    assert close["lift_over_base"] == pytest.approx(0.0125) and not close["clear_of_noise"]
    clear = {"accuracy": 0.56, "base_accuracy": 0.5, "improves_on_base": True}
    judge_target(clear, n_images=200, seeds=2)
    assert clear["clear_of_noise"]

    runs = {"vgrpo": [_run([0.5, 0.6], 60)], "flow-grpo": [_run([0.5, 0.5125], 60)]}
    target, speedups, summaries = summarize_runs(runs, [0], marks=1)
    judge_target(target, n_images=200, seeds=1)
    methods = {m: {**s, "config": {}} for m, s in summaries.items()}
    report = {
        "budget_s": 60,
        "seeds": [0],
        "device": "cpu",
        "target": target,
        "methods": methods,
        "speedup_of_vgrpo": speedups,
    }
    write_speed_report(report, tmp_path)
    assert "**inside** the evaluation noise" in (tmp_path / "speed.md").read_text()


def test_speedups_at_the_noise_clear_level_are_read_on_the_mean_curves(tmp_path):
    runs = {
        "vgrpo": [_run([0.5, 0.58, 0.7], 60), _run([0.5, 0.54, 0.68], 60)],  # mean 0.56 at mark 1
        "flow-grpo": [_run([0.5, 0.52, 0.6], 60), _run([0.5, 0.6, 0.52], 60)],  # 0.56 at mark 1 and 2
        "mix-grpo": [_run([0.5, 0.5, 0.6], 60), _run([0.5, 0.5, 0.48], 60)],  # never above 0.54
    }
    target, speedups, summaries = summarize_runs(runs, [0, 1], marks=2)
    level = speedups_at_level(summaries, 0.55)
    assert level["time_s"] == {"vgrpo": 60, "flow-grpo": 60, "mix-grpo": None}
    assert level["speedup_of_vgrpo"] == {"flow-grpo": pytest.approx(1.0)}
    slower = speedups_at_level(summaries, 0.6)
    assert slower["time_s"] == {"vgrpo": 120, "flow-grpo": None, "mix-grpo": None}
    assert slower["speedup_of_vgrpo"] == {}

    judge_target(target, n_images=200, seeds=2)
    methods = {m: {**s, "config": {}} for m, s in summaries.items()}
    report = {
        "budget_s": 120,
        "seeds": [0, 1],
        "device": "cpu",
        "target": target,
        "methods": methods,
        "speedup_of_vgrpo": speedups,
        "noise_clear_level": speedups_at_level(summaries, 0.55),
    }
    write_speed_report(report, tmp_path)
    assert (
        "Read at base + 2 standard errors, 0.550 (clear of the evaluation noise whatever flow-grpo's peak), the "
        "mean curves first get there at: vgrpo 60 s, flow-grpo 60 s (V-GRPO 1.0x faster), mix-grpo not reached."
    ) in (tmp_path / "speed.md").read_text()


def test_the_common_level_is_the_lowest_peak_and_every_cost_is_compared_there(tmp_path):
    def run(accuracies: list[float], steps_per_mark: int) -> list[Snapshot]:
        return [Snapshot(i, 60.0 * i, 5 * i, steps_per_mark * i, 1000 * i, 0.0, a) for i, a in enumerate(accuracies)]

    runs = {
        "vgrpo": [run([0.5, 0.62, 0.7], 4), run([0.5, 0.6, 0.72], 4)],  # mean 0.61 at mark 1
        "flow-grpo": [run([0.5, 0.56, 0.6], 16), run([0.5, 0.54, 0.62], 16)],  # mean 0.61 at mark 2
        "diffusion-nft": [run([0.5, 0.9, 0.58], 10), run([0.5, 0.3, 0.6], 10)],  # peaks at 0.6 (mark 1)
    }
    target, speedups, summaries = summarize_runs(runs, [0, 1], marks=2)
    assert common_level(summaries) == pytest.approx(0.6)  # diffusion-nft's peak, below the others'
    level = speedups_at_level(summaries, common_level(summaries))
    assert level["time_s"] == {"vgrpo": 60, "flow-grpo": 120, "diffusion-nft": 60}
    assert level["gradient_steps"] == {"vgrpo": 4, "flow-grpo": 32, "diffusion-nft": 10}
    assert level["speedup_of_vgrpo"] == {"flow-grpo": pytest.approx(2.0), "diffusion-nft": pytest.approx(1.0)}
    assert level["gradient_step_ratio_of_vgrpo"] == {
        "flow-grpo": pytest.approx(8.0),
        "diffusion-nft": pytest.approx(2.5),
    }
    assert level["nfe_ratio_of_vgrpo"] == {"flow-grpo": pytest.approx(2.0), "diffusion-nft": pytest.approx(1.0)}

    judge_target(target, n_images=200, seeds=2)
    report = {
        "budget_s": 120,
        "seeds": [0, 1],
        "device": "cpu",
        "target": target,
        "methods": {m: {**s, "config": {}} for m, s in summaries.items()},
        "speedup_of_vgrpo": speedups,
        "common_level": level,
    }
    write_speed_report(report, tmp_path)
    markdown = (tmp_path / "speed.md").read_text()
    assert "highest level every method's mean curve reaches, 0.600" in markdown
    assert "| flow-grpo | 120 | 32 | 2000 | 2.0x | 8.0x | 2.0x |" in markdown
    assert "| diffusion-nft | 60 | 10 | 1000 | 1.0x | 2.5x | 1.0x |" in markdown
    final_over_base = {m: f"{s['final_accuracy']['mean'] - 0.5:+.3f}" for m, s in summaries.items()}
    assert final_over_base == {"vgrpo": "+0.210", "flow-grpo": "+0.110", "diffusion-nft": "+0.090"}
    assert all(f"| {value} |" in markdown for value in final_over_base.values())


@pytest.mark.slow
def test_speed_benchmark_writes_json_plot_and_table(tiny_model, tmp_path, monkeypatch):
    evaluations = []
    evaluate = speed_module.evaluate
    monkeypatch.setattr(speed_module, "evaluate", lambda *a, **k: evaluations.append(1) or evaluate(*a, **k))
    small = RolloutConfig(prompts_per_iteration=2, group_size=4, steps=4, solver="euler", batch_size=16)
    configs = {
        method: dataclasses.replace(config, rollout=small, mix_grpo=MixGRPOConfig(window_size=2))
        for method, config in method_configs(["vgrpo", "flow-grpo", "mix-grpo"], tiny_model, "cpu").items()
    }
    report = speed_benchmark(
        configs, budget_minutes=0.02, seeds=[0, 1], marks=2, eval_per_category=1, eval_seeds=1, log=lambda line: None
    )
    budget = report["budget_s"]
    runs = [run["snapshots"] for result in report["methods"].values() for run in result["runs"]]
    # the base model (mark 0) is evaluated once for all six runs, every trained snapshot once
    assert len(evaluations) == 1 + sum(len(snaps) - 1 for snaps in runs)
    assert len({snaps[0]["accuracy"] for snaps in runs}) == 1
    for method, result in report["methods"].items():
        assert result["config"]["algorithm"] == method
        for run in result["runs"]:
            snaps = run["snapshots"]
            assert snaps[0]["mark"] == 0 and snaps[0]["iteration"] == 0
            assert snaps[-1]["wall_s"] >= budget and snaps[-1]["mark"] == 2
            assert all(a["wall_s"] < b["wall_s"] and a["nfe"] < b["nfe"] for a, b in itertools.pairwise(snaps))
            assert all(0.0 <= s["accuracy"] <= 1.0 for s in snaps)
    n_images = len(CATEGORIES) * 1 * 1  # one prompt per category, one evaluation seed
    assert report["target"]["standard_error"] == pytest.approx((0.25 / (n_images * 2)) ** 0.5)
    level, target = report["noise_clear_level"], report["target"]
    assert level["accuracy"] == pytest.approx(target["base_accuracy"] + 2 * target["standard_error"])
    assert set(level["time_s"]) == {"vgrpo", "flow-grpo", "mix-grpo"}
    common = report["common_level"]
    peaks = [max(p["accuracy"] for p in result["mean_curve"][1:]) for result in report["methods"].values()]
    assert common["accuracy"] == min(peaks)
    assert all(time is not None for time in common["time_s"].values())
    flow_curve = report["methods"]["flow-grpo"]["mean_curve"]
    assert report["target"]["accuracy"] == max(p["accuracy"] for p in flow_curve[1:])
    if report["target"]["improves_on_base"]:
        assert report["methods"]["flow-grpo"]["time_to_target_s"]["reached"] != "0/2"
    else:
        assert report["speedup_of_vgrpo"] == {}

    table = write_speed_report(report, tmp_path)
    assert json.loads((tmp_path / "speed.json").read_text())["benchmark"] == "speed"
    assert Image.open(tmp_path / "accuracy_vs_wall_clock.png").size[0] > 400
    markdown = (tmp_path / "speed.md").read_text()
    assert all(f"| {m} |" in markdown for m in ("vgrpo", "flow-grpo", "mix-grpo"))
    assert "time_to_target_s" in table


def test_speed_cli_refuses_bad_arguments(tmp_path, capsys):
    assert main(["bench", "speed", "--budget-minutes", "0", "--out", str(tmp_path)]) == 2
    assert "--budget-minutes" in capsys.readouterr().err
    assert main(["bench", "speed", "--budget-minutes", "1", "--methods", "vgrpo", "--out", str(tmp_path)]) == 2
    assert "flow-grpo" in capsys.readouterr().err


def test_a_method_can_train_from_a_config_file_instead_of_its_preset(tmp_path, capsys):
    preset = load_preset("shapes-geneval-flow-grpo")
    tuned_rate = preset.optimizer.learning_rate / 3
    tuned = dataclasses.replace(preset, optimizer=dataclasses.replace(preset.optimizer, learning_rate=tuned_rate))
    path = tmp_path / "flow.yaml"
    path.write_text(dump_config(tuned))
    configs = method_configs(["vgrpo", "flow-grpo"], files={"flow-grpo": path})
    assert configs["flow-grpo"].optimizer.learning_rate == pytest.approx(tuned_rate)
    assert configs["vgrpo"].optimizer.learning_rate == load_preset("shapes-geneval").optimizer.learning_rate

    with pytest.raises(ValueError, match="not 'vgrpo'"):
        method_configs(["vgrpo", "flow-grpo"], files={"vgrpo": path})
    with pytest.raises(ValueError, match="--config: 'mix-grpo' is not among --methods"):
        method_configs(["vgrpo", "flow-grpo"], files={"mix-grpo": path})
    args = ["bench", "speed", "--budget-minutes", "1", "--out", str(tmp_path)]
    assert main([*args, "--config", "flow-grpo"]) == 2
    assert "METHOD=FILE.yaml" in capsys.readouterr().err
    assert main([*args, "--config", f"flow-grpo={tmp_path / 'missing.yaml'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


class _Interrupted(Exception):
    pass


def test_runs_go_seed_by_seed_and_an_interrupted_benchmark_resumes(monkeypatch):
    lifts = {"vgrpo": 0.2, "flow-grpo": 0.1, "mix-grpo": 0.05}
    trained: list[tuple[str, int]] = []

    def train(config, budget_s, marks, max_iterations=None):
        if len(trained) == stop_after:
            raise _Interrupted
        trained.append((config.algorithm, config.seed))
        lift = lifts[config.algorithm] + 0.01 * config.seed
        snapshots = [Snapshot(0, 0.0, 0, 0, 0, math.nan), Snapshot(1, budget_s, 10, 10, 1000, lift)]
        return speed_module.BudgetRun(None, snapshots, [{}, {}], [])

    def evaluate_snapshots(adapter, snapshots, states, specs, seeds, sampling, base_accuracy=None):
        for s in snapshots:  # the fake training put each run's lift in train_reward
            s.accuracy = 0.5 if s.mark == 0 else 0.5 + s.train_reward

    monkeypatch.setattr(speed_module, "train_with_budget", train)
    monkeypatch.setattr(speed_module, "evaluate_snapshots", evaluate_snapshots)
    configs = method_configs(["vgrpo", "flow-grpo", "mix-grpo"], device="cpu")
    progress: list[dict] = []

    def run(finished=None):
        return speed_benchmark(
            configs,
            1,
            [0, 1],
            marks=1,
            log=lambda line: None,
            finished=finished,
            on_progress=lambda p: progress.append(json.loads(json.dumps(p))),
        )

    stop_after = 4  # interrupted while training the fifth run
    with pytest.raises(_Interrupted):
        run()
    # seed 0 of every method first, so a slowing machine does not fall on one method's runs
    assert trained == [("vgrpo", 0), ("flow-grpo", 0), ("mix-grpo", 0), ("vgrpo", 1)]
    assert [(r["method"], r["seed"]) for r in progress[-1]["runs"]] == trained

    settings = speed_settings(configs, 1, 1, 20, 2)
    finished = resumable_runs(progress[-1], settings)
    trained.clear()
    stop_after = None
    report = run(finished)
    assert trained == [("flow-grpo", 1), ("mix-grpo", 1)]
    assert len(progress[-1]["runs"]) == 6
    for method, lift in lifts.items():
        accuracies = [run["snapshots"][1]["accuracy"] for run in report["methods"][method]["runs"]]
        assert accuracies == pytest.approx([0.5 + lift, 0.51 + lift])
    assert report["target"]["accuracy"] == pytest.approx(0.605)

    with pytest.raises(ValueError, match="other budget_s"):
        resumable_runs(progress[-1], speed_settings(configs, 2, 1, 20, 2))
    with pytest.raises(ValueError, match="other configs"):
        resumable_runs(progress[-1], speed_settings(method_configs(["vgrpo", "flow-grpo"], device="cpu"), 1, 1, 20, 2))
    with pytest.raises(ValueError, match="not a speed benchmark's progress"):
        resumable_runs({"benchmark": "ablation"}, settings)


def test_the_cli_refuses_a_progress_file_from_other_settings_and_leaves_it(tmp_path, capsys):
    configs = method_configs(["vgrpo", "flow-grpo", "mix-grpo"], device="cpu")
    stored = json.dumps({"benchmark": "speed-progress", "settings": speed_settings(configs, 5, 6, 20, 2), "runs": []})
    (tmp_path / "speed.progress.json").write_text(stored)
    args = ["bench", "speed", "--budget-minutes", "3", "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "other budget_s" in capsys.readouterr().err
    assert (tmp_path / "speed.progress.json").read_text() == stored
