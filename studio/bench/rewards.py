"""`vgrpo bench rewards`: seconds per image of each reward, as a job's scoring would spend them.

Each named reward is built the way a job builds it (the registry, weights from a models directory) and
scores batches of random images: with prompts that ask for a quoted word (what the OCR reward reads),
or of the shapes grammar for the shapes rewards. With `--random-weights` the learned rewards get
real-size models with random weights instead (CLIP ViT-L/14 for clip_score and the aesthetic predictor,
ViT-H/14 for PickScore and, as an OpenCLIP checkpoint, HPSv2; BLIP ViT-L + BERT-base for ImageReward),
saved in the published layout to a scratch directory: their time and memory do not depend on the weights.
One untimed batch first (loading, caches).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from studio.bench import device_name
from trainer_core.rewards.base import RewardModelConfig
from trainer_core.rewards.registry import build_rewards, reward_specs
from trainer_core.shapes.prompt_sets import train_prompts
from trainer_core.shapes.scoring import SCORE_NAMES

#: which real-size CLIP each learned reward runs on
RANDOM_CLIPS = {"clip_score": "vit-l-14", "pickscore": "vit-h-14", "aesthetic": "vit-l-14"}


def random_reward_models(names: list[str], folder: Path) -> Path:
    """A models directory with `rewards/NAME` for each learned reward of `names`, random weights."""
    from trainer_core.real_sizes import (
        REAL_CLIPS,
        random_open_clip_state,
        save_random_clip,
        save_random_image_reward,
        synthetic_clip_tokenizer,
    )
    from trainer_core.rewards.aesthetic import MLP_FILE, aesthetic_mlp
    from trainer_core.rewards.hpsv2 import CHECKPOINT

    for name in names:
        target = folder / "rewards" / name
        if name == "imagereward":
            save_random_image_reward(target)
        elif name == "hpsv2":
            target.mkdir(parents=True)
            torch.save(random_open_clip_state(REAL_CLIPS["vit-h-14"]), target / CHECKPOINT)
            synthetic_clip_tokenizer(target / "tokenizer", 77).save_pretrained(target / "tokenizer")
        if name not in RANDOM_CLIPS:
            continue
        save_random_clip(RANDOM_CLIPS[name], target / "clip" if name == "aesthetic" else target)
        if name == "aesthetic":
            mlp = aesthetic_mlp(int(REAL_CLIPS[RANDOM_CLIPS[name]]["projection_dim"]))  # type: ignore[call-overload]
            torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, target / MLP_FILE)
    return folder


def reward_benchmark(
    names: list[str],
    models_dir: Path | None,
    images: int = 16,
    resolution: int = 512,
    batches: int = 2,
    device: str = "auto",
    random_weights: bool = False,
) -> dict[str, object]:
    """Seconds per image of each reward in `names` over `batches` timed batches of `images` images."""
    specs = reward_specs()
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"--names: unknown {unknown[0]!r}; allowed: {', '.join(specs)}")
    scratch = tempfile.TemporaryDirectory(prefix="vgrpo-reward-models-") if random_weights else None
    if scratch is not None:
        models_dir = random_reward_models(names, Path(scratch.name))
    configs = {name: RewardModelConfig(device=device, batch_size=images) for name in names}
    rng = np.random.default_rng(0)
    quoted = [f'a sign that says "word{i}"' for i in range(images)]  # what OCR reads; CLIP takes any text
    grammar = [spec.prompt for spec in train_prompts(images, seed=0)]  # the shapes rewards' prompts
    rows = []
    try:
        for name in names:
            prompts = grammar if name in SCORE_NAMES else quoted
            reward = build_rewards([name], configs, models_dir)[name]
            batch = rng.integers(0, 255, (images, resolution, resolution, 3), dtype=np.uint8)
            reward.score(batch, prompts)  # untimed: first-call costs
            started = time.perf_counter()
            for _ in range(batches):
                reward.score(rng.integers(0, 255, batch.shape, dtype=np.uint8), prompts)
            seconds = (time.perf_counter() - started) / (batches * images)
            rows.append({"reward": name, "ms_per_image": round(1000 * seconds, 3)})
    finally:
        if scratch is not None:
            scratch.cleanup()
    return {
        "benchmark": "rewards",
        "device": device_name(str(configs[names[0]].torch_device())) if names else "",
        "random_weights": random_weights,
        "images_per_batch": images,
        "resolution": resolution,
        "batches_timed": batches,
        "results": rows,
    }
