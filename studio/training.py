"""Running a training: a config in, a run directory out, resumable, interruptible."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from storage.data_dir import DataDir
from studio.paths import in_data_dir
from studio.reward_catalog import RewardCatalog
from studio.runs import RunDirectory
from trainer_core.adapters import load_model
from trainer_core.algorithms import make_trainer
from trainer_core.config import TrainConfig, dump_config, load_config
from trainer_core.distributed import World
from trainer_core.image_grid import save_grid
from trainer_core.model_zoo import pickled_weights
from trainer_core.rewards.base import RewardMix
from trainer_core.trainer import GroupTrainer


@dataclass
class TrainingResult:
    iterations_done: int
    interrupted: bool
    final_checkpoint: Path | None


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next iteration boundary."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopFlag:
        self.previous = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not in the main thread: nothing to install
            self.previous = None
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def build_rewards(config: TrainConfig, data_dir: DataDir | None = None) -> RewardMix:
    """The config's reward mix; preference rewards come from `data_dir` (the default one when None)."""
    catalog = RewardCatalog(data_dir)
    return RewardMix(catalog.build(config.rewards.scored, config.rewards), config.rewards)


def run_training(
    config: TrainConfig,
    out: Path,
    resume: bool = False,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    on_samples: Callable[[int, Path], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    data_dir: DataDir | None = None,
) -> TrainingResult:
    """Train to `config.iterations`, or until `config.time_budget_minutes` runs out, writing the run
    directory as it goes.

    With `resume`, continue from the latest checkpoint in `out` (metrics after
    it are dropped and redone); the run's saved config is kept, except that
    `config.iterations` and `config.time_budget_minutes` may extend it. Ctrl-C, or `should_stop()`
    returning True, stops at the next iteration boundary with a checkpoint. `on_iteration`, `on_checkpoint` and
    `on_samples` hear of each metrics row, checkpoint file and sample grid once it is on disk.
    `clock` (seconds) times the run for `wall_time_s` and the budget. Preference rewards are read from
    `data_dir` (the default data directory when None).

    Run by every process of a data-parallel job (`trainer_core.distributed`), rank 0 alone writes the run
    directory and calls the callbacks, and decides (for all ranks) where the run starts, the clock the
    schedule follows, and when it stops.
    """
    world = World.current()
    run = RunDirectory(out)
    if world.is_main:
        if run.exists() and not resume:
            raise FileExistsError(f"--out: {out} already holds a run; pass --resume to continue it or choose another")
        if resume and run.exists():
            extended = {"iterations": config.iterations, "time_budget_minutes": config.time_budget_minutes}
            config = dataclasses.replace(load_config(run.config_path), **extended)
        run.create(dump_config(config))
    config = world.broadcast(config)  # type: ignore[assignment]

    data_dir = data_dir or DataDir()
    with pickled_weights(not config.model.safetensors_only):
        adapter = load_model(config.model, data_dir.models)
        rewards = build_rewards(config, data_dir)
    latest = world.broadcast(run.latest_checkpoint()) if resume else None
    sharded = config.resources.fsdp and world.size > 1
    if latest is not None and sharded:  # into whole weights, before the trainer shards them
        adapter.load_lora(run.checkpoint_paths(latest)[0])
    trainer = make_trainer(adapter, rewards, in_data_dir(config, data_dir))

    start = 0
    if latest is not None:
        if not sharded:
            adapter.load_lora(run.checkpoint_paths(latest)[0])
        trainer.load_state_dict(run.load_state(latest))
        start = latest
    budget_s = 60.0 * config.time_budget_minutes

    def out_of_time(wall_s: float, step_s: float) -> bool:
        """Whether one more iteration of step_s seconds would end past the time budget."""
        return budget_s > 0 and wall_s + step_s > budget_s

    wall_offset, end = 0.0, config.iterations
    if world.is_main:
        if resume:
            run.truncate_metrics(start)
        done_rows = run.read_metrics()
        wall_offset = done_rows[-1]["wall_time_s"] if start else 0.0
        # a run that ended on its budget resumes to nothing more (unless the budget was raised)
        end = start if start and out_of_time(wall_offset, done_rows[-1]["iteration_s"]) else config.iterations
    wall_offset, end = world.broadcast((wall_offset, end))  # type: ignore[misc]

    def checkpoint(iteration: int) -> Path:
        """Rank 0 writes; with sharded weights every rank first helps gather them."""
        lora_path, _ = run.checkpoint_paths(iteration)
        if not (world.is_main or sharded):
            return lora_path
        adapter.save_lora(lora_path, _lora_metadata(config, iteration), write=world.is_main)
        state = trainer.state_dict()
        if world.is_main:
            run.save_state(iteration, state)
            if on_checkpoint:
                on_checkpoint(iteration, lora_path)
        return lora_path

    interrupted = False
    started = clock()
    with _StopFlag() as stop:
        for iteration in range(start + 1, end + 1):
            before: float = world.broadcast(wall_offset + clock() - started)  # type: ignore[assignment]
            metrics = trainer.step(before / budget_s if budget_s else 0.0)
            metrics["wall_time_s"] = wall_offset + clock() - started
            last = iteration == end or out_of_time(metrics["wall_time_s"], metrics["wall_time_s"] - before)
            stopping = stop.requested or bool(should_stop and should_stop())
            last, stopping = world.broadcast((last, stopping))  # type: ignore[misc]
            if world.is_main:
                run.append_metrics(metrics)
            if config.logging.sample_every and (iteration % config.logging.sample_every == 0 or last):
                if world.is_main or sharded:  # sharded weights: every rank takes part in the forward passes
                    save_sample_grid(trainer, config, run.sample_path(iteration), write=world.is_main)
                if on_samples and world.is_main:
                    on_samples(iteration, run.sample_path(iteration))
            if iteration % config.logging.checkpoint_every == 0:
                checkpoint(iteration)
            if on_iteration and world.is_main:
                on_iteration(metrics)
            if last:
                break
            if stopping:
                if iteration % config.logging.checkpoint_every:
                    checkpoint(iteration)
                interrupted = True
                break

    final = None
    if not interrupted:
        if trainer.iteration % config.logging.checkpoint_every:
            checkpoint(trainer.iteration)
        final = run.checkpoints / "final.safetensors"
        if world.is_main or sharded:
            adapter.save_lora(final, _lora_metadata(config, trainer.iteration), write=world.is_main)
    return TrainingResult(trainer.iteration, interrupted, final)


@torch.no_grad()
def save_sample_grid(trainer: GroupTrainer, config: TrainConfig, path: Path, write: bool = True) -> None:
    """The fixed evaluation prompts x seeds, with the current LoRA, as one labelled PNG (made, not written,
    by the ranks other than 0 of a job with sharded weights)."""
    adapter = trainer.adapter
    prompts = list(config.logging.sample_prompts)
    seeds = list(range(config.logging.sample_seeds))
    embeddings = adapter.encode_prompts(prompts).repeat_interleave(len(seeds))
    noise = adapter.noise(seeds * len(prompts))
    latents = adapter.sample(
        embeddings, noise, config.rollout.steps, config.rollout.solver, config.rollout.guidance_scale
    )
    images = adapter.decode(latents)
    if write:
        save_grid(images, rows=len(prompts), out=path, scale=4, row_labels=prompts)


def _lora_metadata(config: TrainConfig, iteration: int) -> dict[str, str]:
    weights = ",".join(f"{k}={v:g}" for k, v in config.rewards.weights.items())
    return {
        "base_model": config.model.name,
        "algorithm": config.algorithm,
        "iterations": str(iteration),
        "reward_mix": weights,
        "aggregation": config.rewards.aggregation,
    }
