"""`vgrpo bench ablation` and `vgrpo bench throughput` on the tiny model."""

import json
import time

import pytest
import torch

from studio.bench.ablation import (
    VARIANTS,
    ablation_benchmark,
    ablation_markdown,
    ablation_settings,
    resumable_rows,
    variant_config,
)
from studio.bench.throughput import throughput_benchmark
from studio.cli import main
from trainer_core.config import load_preset
from trainer_core.device_timing import DeviceIntervals


def test_each_variant_changes_only_its_vgrpo_fields():
    base = load_preset("shapes-geneval")
    for variant, changes in VARIANTS.items():
        config = variant_config(base, variant, iterations=7)
        assert config.iterations == 7
        differing = {f for f in changes if getattr(config.vgrpo, f) != getattr(base.vgrpo, f)}
        assert differing == {f for f in changes if changes[f] != getattr(base.vgrpo, f)}, variant
        assert (config.rollout, config.optimizer, config.lora) == (base.rollout, base.optimizer, base.lora)
    with pytest.raises(ValueError, match="--variants"):
        variant_config(base, "no such thing", 1)


@pytest.mark.slow
def test_ablation_reports_accuracy_and_surrogate_cv_and_resumes(tiny_config):
    progress: list[dict] = []
    kwargs = {"iterations": 2, "eval_per_category": 1, "eval_seeds": 1, "base": tiny_config()}
    report = ablation_benchmark(
        ["default", "no pair sharing"], log=lambda line: None, on_progress=progress.append, **kwargs
    )
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"default", "no pair sharing"}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["surrogate_cv_within_group"] > 0
    # a report after each variant: an interrupted run keeps the variants it finished
    assert [len(p["results"]) for p in progress] == [1, 2]
    assert [p["complete"] for p in progress] == [False, True]

    # resuming from the interrupted report trains only the missing variant
    lines: list[str] = []
    kept = resumable_rows(progress[0], ablation_settings(2, 0, 1, 1))
    resumed = ablation_benchmark(["default", "no pair sharing"], log=lines.append, measured=kept, **kwargs)
    assert resumed["complete"] and resumed["results"][0] == rows["default"]
    assert [line for line in lines if "iterations" in line] == ["[no pair sharing] 2 iterations"]


def test_ablation_refuses_to_mix_settings_and_keeps_the_stored_report(tmp_path):
    stored = {"benchmark": "ablation", **ablation_settings(60, 0, 20, 2), "results": [{"variant": "default"}]}
    assert resumable_rows(stored, ablation_settings(60, 0, 20, 2)) == [{"variant": "default"}]
    with pytest.raises(ValueError, match=r"iterations=60 \(now 40\)"):
        resumable_rows(stored, ablation_settings(40, 0, 20, 2))
    with pytest.raises(ValueError, match="not an ablation report"):
        resumable_rows({"benchmark": "speed"}, ablation_settings(60, 0, 20, 2))

    out = tmp_path / "ablation.json"
    out.write_text(json.dumps(stored))
    assert main(["bench", "ablation", "--iterations", "40", "--out", str(out)]) == 2
    assert main(["bench", "ablation", "--variants", "n_mc=3", "--out", str(out)]) == 2
    assert json.loads(out.read_text()) == stored


def test_a_partial_run_keeps_the_other_variants_rows_and_reports_its_noise(tiny_config):
    measured = [
        {
            "variant": "n_mc=8",
            "accuracy": 0.61,
            "surrogate_cv_within_group": 0.2,
            "train_reward_last10": 0.5,
            "wall_s": 9,
        },
        {
            "variant": "default",
            "accuracy": 0.6,
            "surrogate_cv_within_group": 0.3,
            "train_reward_last10": 0.5,
            "wall_s": 5,
        },
    ]
    report = ablation_benchmark([], 40, eval_per_category=20, eval_seeds=2, base=tiny_config(), measured=measured)
    assert [r["variant"] for r in report["results"]] == ["default", "n_mc=8"]  # in the table's order
    assert report["evaluation"] == {"prompts": 100, "seeds": 2}
    text = ablation_markdown(report)
    # 200 images: standard error sqrt(1/800) = 0.035, differences under 0.07 are noise
    assert "standard error at most 0.035" in text and "closer than 0.07" in text
    assert "| default | 0.6 | 0.3 | 0.5 | 5 |" in text
    assert "interrupted" not in text
    assert "interrupted" in ablation_markdown({**report, "complete": False})


def test_throughput_splits_an_iteration(tiny_config):
    report = throughput_benchmark(tiny_config(), iterations=1)
    mean = report["mean"]
    parts = mean["rollout_s"] + mean["reward_s"] + mean["old_pass_s"] + mean["train_s"] + mean["logging_s"]
    assert parts == pytest.approx(mean["total_s"], rel=0.05)
    assert 0 < mean["model_s"] < mean["total_s"]
    assert mean["backward_s"] > 0 and mean["forward_s"] > 0
    assert 0 < mean["outside_model_share"] < 1
    assert mean["images_per_s"] == pytest.approx(8 / mean["total_s"], rel=1e-3)
    assert report["peak_memory_mb"] > 10
    assert "phases_synchronised" not in report  # on a CPU the free-running iterations are synchronous


def test_device_intervals_add_up_closed_intervals_and_reset():
    intervals = DeviceIntervals(torch.device("cpu"))
    for _ in range(2):
        with intervals.interval():
            time.sleep(0.02)
    time.sleep(0.05)  # outside any interval
    assert intervals.count == 2
    assert 0.04 <= intervals.take() < 0.09
    assert intervals.take() == 0.0 and intervals.count == 0
    with pytest.raises(RuntimeError, match="without a start"):
        intervals.stop()
