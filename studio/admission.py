"""Admission at submit: a job the workers' devices cannot hold is refused before anything is stored.

A job must fit some live worker: enough devices for `resources.devices`, and each device with the memory
the job's estimated peak needs (`trainer_core.memory_estimate`; its error against measured peaks is in
bench/results/memory). With no worker running, the job waits in the queue for one with enough devices,
and its memory is checked against this machine's devices, where the app's scheduler would run it. A
refusal names the estimate, the limit and the field to lower.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.data_dir import DataDir
from storage.models import Worker
from studio.devices import device_memory, parse_devices
from studio.reward_catalog import is_preference
from trainer_core.adapters import model_family
from trainer_core.config import ConfigError, TrainConfig
from trainer_core.memory_estimate import PART_NAMES, MemoryEstimate, estimate_peak_memory, gib
from trainer_core.model_zoo import resolve_model
from trainer_core.rewards.registry import reward_specs


@dataclass(frozen=True)
class Offer:
    """What one worker (or this machine) offers a job."""

    where: str  # "worker host-a" or "this machine"
    devices: int
    kind: str  # cpu | cuda
    memory: int  # bytes per device


def offers(workers: list[Worker]) -> list[Offer]:
    """The live workers' offers, or this machine's when none runs."""
    if workers:
        return [
            Offer(
                f"worker ({w.host})",
                len(w.devices),
                "cuda" if w.devices and str(w.devices[0]).startswith("cuda") else "cpu",
                int(w.device_memory or 0),
            )
            for w in workers
        ]
    devices = parse_devices(None)
    kind = "cuda" if devices[0].startswith("cuda") else "cpu"
    return [Offer("this machine", len(devices), kind, device_memory(devices))]


def estimate_for(config: TrainConfig, data_dir: DataDir, kind: str) -> MemoryEstimate:
    """The job's peak bytes per process on a device of `kind`."""
    family = model_family(config.model.name, data_dir.models)
    path = resolve_model(config.model.name, data_dir.models)
    return estimate_peak_memory(config, path, kind, reward_weight_bytes(config, data_dir), family)


def admit(config: TrainConfig, data_dir: DataDir, workers: list[Worker]) -> int:
    """The job's estimated peak bytes per device on the offer it fits; a ConfigError naming the field to
    lower when it fits none."""
    # with no worker running, the job waits for one with enough devices: only its memory is checked, here
    candidates = [o for o in offers(workers) if o.devices >= config.resources.devices or not workers]
    if not candidates:
        largest = max(offers(workers), key=lambda o: o.devices)
        raise ConfigError(
            f"resources.devices: the job asks for {config.resources.devices} devices, but the largest "
            f"{largest.where} has {largest.devices}; lower resources.devices or start a worker with more --devices"
        )
    best: tuple[Offer, MemoryEstimate] | None = None
    for offer in sorted(candidates, key=lambda o: -o.memory):
        estimate = estimate_for(config, data_dir, offer.kind)
        if offer.memory == 0 or estimate.total <= offer.memory:  # 0: a worker that did not say
            return estimate.total
        best = best or (offer, estimate)
    assert best is not None
    offer, estimate = best
    part, field = estimate.largest()
    raise ConfigError(
        f"{field}: the job needs {estimate.describe()} per device, but each {offer.kind} device of {offer.where} "
        f"has {gib(offer.memory)}; the {PART_NAMES[part]} weigh most: lower {field}"
        + (" (or shard the model over more devices)" if field == "resources.fsdp" else "")
    )


def reward_weight_bytes(config: TrainConfig, data_dir: DataDir) -> int:
    """Bytes of the learned rewards' weight files the job loads (file sizes: nothing is read)."""
    specs = reward_specs()
    total = 0
    for name in config.rewards.scored:
        if is_preference(name) or name not in specs:
            continue
        path = specs[name].weights_path(config.rewards.model_config(name), data_dir.models)
        total += _size(path) if path is not None else 0
    return total


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0
