"""`vgrpo bench throughput`: where one training iteration's time goes.

Runs a few iterations of a config (after one warm-up) and splits each into rollout, reward, old
pass (s_old / reference means), gradient steps and logging (a metrics line every iteration, a
checkpoint and a sample grid amortised over their intervals). Denoiser forward passes are timed
by module hooks and backward passes by the trainer, so the share of time spent outside model
passes is measured, not guessed. Peak memory: CUDA's allocator peak, or the process's peak RSS.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from studio.bench import device_name
from studio.runs import RunDirectory
from studio.training import _lora_metadata, build_rewards, save_sample_grid
from trainer_core.adapters import load_adapter
from trainer_core.algorithms import make_trainer
from trainer_core.config import TrainConfig, dump_config


class ForwardTimer:
    """Accumulates wall time spent inside a module's forward calls."""

    def __init__(self, module: torch.nn.Module, cuda_sync: bool) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._started = 0.0
        self._sync = cuda_sync
        self._handles = [
            module.register_forward_pre_hook(self._pre),
            module.register_forward_hook(self._post),
        ]

    def _pre(self, *_: object) -> None:
        if self._sync:
            torch.cuda.synchronize()
        self._started = time.perf_counter()

    def _post(self, *_: object) -> None:
        if self._sync:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._started
        self.calls += 1

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def throughput_benchmark(config: TrainConfig, iterations: int = 3) -> dict[str, object]:
    """Time `iterations` iterations of `config` after one warm-up iteration."""
    adapter = load_adapter(config.model.name, config.model.device, config.model.resolution)
    trainer = make_trainer(adapter, build_rewards(config), config)
    trainer.synchronize = True
    sync = adapter.device.type == "cuda"
    if sync:
        torch.cuda.reset_peak_memory_stats(adapter.device)
    timer = ForwardTimer(adapter.denoiser, sync)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDirectory(Path(tmp) / "run")
        run.create(dump_config(config))
        for i in range(iterations + 1):
            timer.take()
            metrics = trainer.step()
            forward_s = timer.take()
            started = time.perf_counter()
            run.append_metrics(metrics)
            metrics_s = time.perf_counter() - started
            started = time.perf_counter()
            lora_path, _ = run.checkpoint_paths(trainer.iteration)
            adapter.save_lora(lora_path, _lora_metadata(config, trainer.iteration))
            run.save_state(trainer.iteration, trainer.state_dict())
            checkpoint_s = time.perf_counter() - started
            timer.take()
            started = time.perf_counter()
            save_sample_grid(trainer, config, run.sample_path(trainer.iteration))
            grid_s = time.perf_counter() - started
            grid_forward_s = timer.take()
            if i == 0:
                continue  # warm-up
            logging_s = (
                metrics_s
                + checkpoint_s / config.logging.checkpoint_every
                + (grid_s / config.logging.sample_every if config.logging.sample_every else 0.0)
            )
            total_s = metrics["iteration_s"] + logging_s
            grid_model_s = grid_forward_s / config.logging.sample_every if config.logging.sample_every else 0.0
            model_s = forward_s + metrics["backward_s"] + grid_model_s
            rows.append(
                {
                    "rollout_s": metrics["rollout_s"],
                    "reward_s": metrics["reward_s"],
                    "old_pass_s": metrics["old_pass_s"],
                    "train_s": metrics["train_s"],
                    "logging_s": logging_s,
                    "total_s": total_s,
                    "forward_s": forward_s,
                    "backward_s": metrics["backward_s"],
                    "model_s": model_s,
                    "outside_model_share": 1 - model_s / total_s,
                    "images_per_s": config.rollout.prompts_rolled_out * config.rollout.group_size / total_s,
                }
            )
    timer.remove()
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    return {
        "benchmark": "throughput",
        "device": device_name(str(adapter.device)),
        "algorithm": config.algorithm,
        "images_per_iteration": config.rollout.prompts_rolled_out * config.rollout.group_size,
        "iterations_timed": iterations,
        "mean": {k: round(v, 4) for k, v in mean.items()},
        "per_iteration": [{k: round(v, 4) for k, v in r.items()} for r in rows],
        "peak_memory_mb": round(peak_memory_mb(adapter.device), 1),
        "config": dataclasses.asdict(config.rollout),
    }


THROUGHPUT_COLUMNS = [
    "rollout_s",
    "reward_s",
    "old_pass_s",
    "train_s",
    "logging_s",
    "total_s",
    "model_s",
    "outside_model_share",
    "images_per_s",
]
