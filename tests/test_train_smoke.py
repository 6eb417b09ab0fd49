"""`vgrpo train --preset shapes-smoke` on the committed base model, as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pytest

from trainer_core.adapters import load_adapter
from trainer_core.config import load_preset
from trainer_core.lora import read_lora
from trainer_core.rewards.builtin import builtin_rewards
from trainer_core.shapes.evaluation import SamplingConfig, generate_images
from trainer_core.shapes.prompt_sets import train_prompts


def mean_reward(lora_path, reward: str, prompts: list[str], seeds: list[int]) -> float:
    adapter = load_adapter("shapes-base", "cpu")
    if lora_path is not None:
        adapter.load_lora(lora_path)
    config = load_preset("shapes-smoke")
    sampling = SamplingConfig(steps=config.rollout.steps, solver=config.rollout.solver)
    all_prompts = [p for p in prompts for _ in seeds]
    images = generate_images(adapter, all_prompts, seeds * len(prompts), sampling)
    return float(np.mean(builtin_rewards()[reward].score(images, all_prompts)))


@pytest.mark.slow
def test_smoke_preset_trains_and_raises_the_training_reward(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run(
        [sys.executable, "-m", "studio.cli", "train", "--preset", "shapes-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    config = load_preset("shapes-smoke")
    assert [r["iteration"] for r in rows] == list(range(1, config.iterations + 1))
    required = {
        "iteration",
        "wall_time_s",
        "reward_mean",
        "reward_std",
        "reward_partial",
        "loss",
        "ratio_mean",
        "clip_fraction",
        "kl",
        "grad_norm",
        "surrogate_cv_within_group",
        "images_per_s",
    }
    assert required <= set(rows[0])
    final = out / "checkpoints" / "final.safetensors"
    spec, _, metadata = read_lora(final)
    assert spec.rank == config.lora.rank and metadata["base_model"] == "shapes-base"
    assert (out / "config.yaml").is_file() and list((out / "samples").glob("*.png"))

    # The training reward on fresh training-distribution prompts, same seeds, before and after.
    prompts = [spec.prompt for spec in train_prompts(24, seed=1234)]
    before = mean_reward(None, "partial", prompts, [0, 1])
    after = mean_reward(final, "partial", prompts, [0, 1])
    assert after > before
