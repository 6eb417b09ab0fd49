"""A worker's devices as resources that jobs take and give back.

`--devices` names them: `cuda:0,1` (or `cuda:0,cuda:1`; `cuda` is every visible GPU) or `cpu` / `cpu:N`
(N process slots on the CPU, for data-parallel jobs on gloo and for tests). A job takes as many devices as
its `resources.devices`, each with room for one more job (`jobs_per_device`, 1 unless the owner allows
sharing), and sees only its own GPUs (`CUDA_VISIBLE_DEVICES`).
"""

from __future__ import annotations

import os
import re
from collections import Counter

import torch


class DeviceError(ValueError):
    """A --devices list that names nothing usable."""


def parse_devices(spec: str | None) -> list[str]:
    """The devices a worker offers; None: every visible GPU, else one CPU slot."""
    if spec is None or not spec.strip():
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(count)] or ["cpu:0"]
    spec = spec.strip().lower()
    if match := re.fullmatch(r"cpu(?::(\d+))?", spec):
        slots = int(match.group(1) or 1)
        if slots < 1:
            raise DeviceError(f"--devices: cpu:N needs N >= 1, got {spec!r}")
        return [f"cpu:{i}" for i in range(slots)]
    if spec == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise DeviceError("--devices: cuda asked for, but no GPU is visible here; use cpu")
        return [f"cuda:{i}" for i in range(count)]
    indices = [part.strip().removeprefix("cuda:") for part in spec.removeprefix("cuda:").split(",")]
    if not spec.startswith("cuda") or not all(i.isdigit() for i in indices):
        raise DeviceError(f"--devices: expected cpu, cpu:N, cuda or cuda:0,1,..., got {spec!r}")
    if len(set(indices)) != len(indices):
        raise DeviceError(f"--devices: a GPU is named twice in {spec!r}")
    return [f"cuda:{i}" for i in indices]


class DevicePool:
    """Which of a worker's devices run how many jobs."""

    def __init__(self, devices: list[str], jobs_per_device: int = 1) -> None:
        if not devices:
            raise DeviceError("--devices: name at least one device")
        if jobs_per_device < 1:
            raise DeviceError(f"--jobs-per-device: must be at least 1, got {jobs_per_device}")
        self.devices, self.jobs_per_device = list(devices), jobs_per_device
        self.load: Counter[str] = Counter()

    def free(self) -> int:
        """Devices with room for one more job: the most a job claimed now may ask for."""
        return sum(self.load[d] < self.jobs_per_device for d in self.devices)

    def take(self, count: int) -> list[str]:
        """`count` distinct devices, the least loaded first."""
        room = [d for d in self.devices if self.load[d] < self.jobs_per_device]
        open_devices = sorted(room, key=lambda d: self.load[d])
        if count > len(open_devices):
            raise DeviceError(f"{count} devices asked for, {len(open_devices)} free")
        taken = open_devices[:count]
        self.load.update(taken)
        return taken

    def give_back(self, devices: list[str]) -> None:
        self.load.subtract(devices)


def visible_devices(devices: list[str]) -> str:
    """CUDA_VISIBLE_DEVICES for a job on these devices ("" for CPU slots: the job sees no GPU)."""
    return ",".join(d.removeprefix("cuda:") for d in devices if d.startswith("cuda:"))


def device_memory(devices: list[str], jobs_per_device: int = 1) -> int:
    """Bytes one job may use on each of these devices: the smallest GPU's memory, or on a CPU the machine's
    memory shared among its slots (and the jobs each slot runs)."""
    if devices and devices[0].startswith("cuda"):
        sizes = [torch.cuda.get_device_properties(int(d.removeprefix("cuda:"))).total_memory for d in devices]
        return min(sizes) // jobs_per_device
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return physical // (len(devices) * jobs_per_device)
