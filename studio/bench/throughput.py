"""`vgrpo bench throughput`: where one training iteration's time goes.

Runs a few iterations of a config (after one warm-up) and splits each into rollout, reward, old
pass (s_old / reference means), gradient steps and logging (a metrics line every iteration, a
checkpoint and a sample grid amortised over their intervals). Denoiser forward passes are timed
by module hooks and backward passes by the trainer, as device time (`DeviceIntervals`: CUDA events
on a GPU), so the share of time spent outside model passes is measured, not guessed.

On a GPU the host runs ahead of the device and its work overlaps the model passes (reward scoring
runs while the old pass does), so the timed iterations run free and give the total, images/s and
the share; the phase split needs a synchronisation at every boundary, which removes the overlap,
so it comes from as many extra synchronised iterations (`phases_synchronised`, whose total is the
iteration without overlap). On a CPU both are the same iterations. Peak memory: CUDA's allocator
peak, or the process's peak RSS.
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
from trainer_core.adapters import DenoiserAdapter, families, load_model, memory_options
from trainer_core.algorithms import make_trainer
from trainer_core.config import TrainConfig, dump_config
from trainer_core.device_timing import DeviceIntervals
from trainer_core.trainer import GroupTrainer

PHASES = ("rollout_s", "reward_s", "old_pass_s", "train_s")


class ForwardTimer:
    """Accumulates the device time spent inside a module's forward calls."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.intervals = DeviceIntervals(device)
        self._handles = [
            module.register_forward_pre_hook(lambda *_: self.intervals.start()),
            module.register_forward_hook(lambda *_: self.intervals.stop()),
        ]

    def take(self) -> float:
        return self.intervals.take()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _timed_iteration(
    trainer: GroupTrainer, config: TrainConfig, run: RunDirectory, timer: ForwardTimer
) -> dict[str, float]:
    """One iteration plus its share of logging, split into phases and model time."""
    adapter = trainer.adapter
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
    every = config.logging
    started = time.perf_counter()
    if every.sample_every:
        save_sample_grid(trainer, config, run.sample_path(trainer.iteration))
    grid_s = time.perf_counter() - started
    grid_forward_s = timer.take()
    grid_share = 1 / every.sample_every if every.sample_every else 0.0
    logging_s = metrics_s + checkpoint_s / every.checkpoint_every + grid_s * grid_share
    total_s = metrics["iteration_s"] + logging_s
    grid_model_s = grid_forward_s * grid_share
    model_s = forward_s + metrics["backward_s"] + grid_model_s
    return {
        **{phase: metrics[phase] for phase in PHASES},
        "logging_s": logging_s,
        "total_s": total_s,
        "forward_s": forward_s,
        "backward_s": metrics["backward_s"],
        "model_s": model_s,
        "outside_model_share": 1 - model_s / total_s,
        "images_per_s": config.rollout.prompts_rolled_out * config.rollout.group_size / total_s,
    }


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def throughput_benchmark(
    config: TrainConfig, iterations: int = 3, adapter: DenoiserAdapter | None = None
) -> dict[str, object]:
    """Time `iterations` iterations of `config` after one warm-up iteration (on a GPU, and as many
    synchronised ones for the phase split). `adapter` replaces the config's model (a random-weight one)."""
    adapter = adapter or load_model(config.model)
    trainer = make_trainer(adapter, build_rewards(config), config)
    on_cuda = adapter.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(adapter.device)
    timer = ForwardTimer(adapter.denoiser, adapter.device)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDirectory(Path(tmp) / "run")
        run.create(dump_config(config))
        _timed_iteration(trainer, config, run, timer)  # warm-up
        rows = [_timed_iteration(trainer, config, run, timer) for _ in range(iterations)]
        synchronised = []
        if on_cuda:
            trainer.synchronize = True
            synchronised = [_timed_iteration(trainer, config, run, timer) for _ in range(iterations)]
            trainer.synchronize = False
    timer.remove()
    mean = _mean(rows)
    report: dict[str, object] = {
        "benchmark": "throughput",
        "device": device_name(str(adapter.device)),
        "algorithm": config.algorithm,
        "images_per_iteration": config.rollout.prompts_rolled_out * config.rollout.group_size,
        "iterations_timed": iterations,
        "mean": {k: round(v, 4) for k, v in mean.items()},
        "per_iteration": [{k: round(v, 4) for k, v in r.items()} for r in rows],
        "peak_memory_mb": round(peak_memory_mb(adapter.device), 1),
        "denoiser_parameters": sum(p.numel() for p in adapter.denoiser.parameters()),
        "resolution": adapter.latent_shape[-1] * getattr(getattr(adapter, "pipe", None), "vae_scale_factor", 1),
        "memory": dataclasses.asdict(adapter.memory),
        "config": dataclasses.asdict(config.rollout),
    }
    if synchronised:  # free-running phases are host times that overlap the device's work
        report["phases_synchronised"] = {k: round(v, 4) for k, v in _mean(synchronised).items()}
    return report


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


def real_size_run(
    name: str,
    device: str,
    resolution: int,
    prompts_per_iteration: int = 1,
    group_size: int = 2,
    steps: int | None = None,
    t5: bool = True,
) -> tuple[TrainConfig, DenoiserAdapter]:
    """A V-GRPO config and an adapter of the real architecture `name` (`trainer_core.real_sizes`) with
    random weights: the family's LoRA targets, rollout defaults and memory options, the paper's LoRA
    (rank 32, alpha 64), N_MC 2 and one gradient step, JPEG incompressibility as the reward."""
    from trainer_core.adapters import resolve_device
    from trainer_core.adapters.base import weight_dtype
    from trainer_core.config import from_dict, load_preset, to_dict
    from trainer_core.real_sizes import REAL_DENOISERS, random_pipeline

    if name not in REAL_DENOISERS:
        raise ValueError(f"--model-config: unknown {name!r}; allowed: {', '.join(REAL_DENOISERS)}")
    family = families()[REAL_DENOISERS[name][0]]
    target = resolve_device(device)
    data = to_dict(load_preset("shapes-smoke"))
    data["model"].update(name=f"random:{name}", device=str(target), resolution=resolution)
    data["rollout"].update(
        prompts_per_iteration=prompts_per_iteration,
        group_size=group_size,
        steps=steps or family.rollout.steps,
        guidance_scale=family.rollout.guidance_scale,
        solver="euler",
    )
    data["vgrpo"].update(n_mc=2, gradient_steps=1)
    data["lora"] = {"rank": 32, "alpha": 64.0, "dropout": 0.0, "target_modules": list(family.lora_targets)}
    data["rewards"] = {"weights": {"jpeg_incompressibility": 1.0}}
    data["logging"].update(sample_every=0, checkpoint_every=1)
    config = from_dict(TrainConfig, data)
    adapter = family.adapter(random_pipeline(name, target, weight_dtype(target), t5=t5), resolution)
    adapter.denoiser.requires_grad_(False)
    adapter.configure_memory(memory_options(config.model, family))
    return config, adapter
