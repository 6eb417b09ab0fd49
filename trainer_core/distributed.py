"""Data parallelism over processes (torch.distributed), arranged so that N processes compute what one does.

Every rank draws the whole iteration's randomness (prompts, initial noise, SDE noise, ELBO pairs) from
the same seeded generators and keeps the rows of its own prompt groups: rank r of N takes groups
[r n / N, (r + 1) n / N), so a group never spans ranks and the random state after an iteration is the
same on every rank and in a one-process run (a checkpoint resumes on any number of processes). Rewards
are gathered so that every rank computes the group statistics, selection and metrics of the whole
batch; each rank's loss is weighted by its share of the global batch and the gradients are summed
across ranks before the optimiser step, which every rank then takes identically.

`World()` is the one-process world: every collective is the identity, so single-process training runs
exactly the code it ran before.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> World:
        """The process group this process belongs to, or the one-process world."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes metrics, sample grids and checkpoints."""
        return self.rank == 0

    def rows(self, n_groups: int, group_size: int) -> slice:
        """This rank's images of a batch of `n_groups` groups of `group_size`."""
        first, last = self.rank * n_groups // self.size, (self.rank + 1) * n_groups // self.size
        return slice(first * group_size, last * group_size)

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over the ranks, in place (one collective for all of them)."""
        if self.size == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def sum_gradients(self, parameters: list[torch.Tensor]) -> None:
        """Sum the parameters' gradients over the ranks (a rank with no images contributes zeros)."""
        if self.size == 1:
            return
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.sum_([p.grad for p in parameters])  # type: ignore[misc]

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        if self.size == 1:
            return values
        summed = torch.tensor(list(values.values()), dtype=torch.float64, device=self._device())
        dist.all_reduce(summed)
        return dict(zip(values, summed.tolist(), strict=True))

    def gather(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each array concatenated over the ranks, in rank order (= group order)."""
        if self.size == 1:
            return local
        parts: list[dict[str, np.ndarray]] = [{} for _ in range(self.size)]
        dist.all_gather_object(parts, local)
        return {name: np.concatenate([part[name] for part in parts]) for name in local}

    def any(self, flag: bool) -> bool:
        """Whether any rank says so (a stop request that rank 0 alone hears of)."""
        if self.size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self._device())
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def broadcast(self, value: object) -> object:
        """Rank 0's value, on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group once every rank is done (a rank that exits while another still talks
        to it makes that one fail)."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    @staticmethod
    def _device() -> torch.device:
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def init_from_environment() -> World:
    """Join the process group a launcher (torchrun, `accelerate launch`) describes in the environment:
    NCCL with one GPU per local rank when CUDA is visible, else gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    return World.current()


#: denoiser modules that become FSDP units of their own: diffusers' UNet blocks (CrossAttnDownBlock2D,
#: UpBlock2D, ...) and transformer blocks (BasicTransformerBlock, JointTransformerBlock, FluxTransformerBlock)
FSDP_UNIT = re.compile(r"(Block|Block2D)$")


def shard(denoiser: torch.nn.Module, world: World) -> None:
    """Shard the denoiser's weights (frozen base and LoRA) across the ranks with FSDP2, block by block, so
    a rank holds 1/N of them at rest and gathers one block at a time. FSDP averages the gradients over the
    ranks (gloo has no pre-scaled sum), so the trainer scales its backward passes by N to get their sum."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cuda" if dist.get_backend() == "nccl" else "cpu", (world.size,))
    units = [m for m in denoiser.modules() if m is not denoiser and FSDP_UNIT.search(type(m).__name__)]
    for unit in reversed(units):  # innermost first, as nested FSDP units must be
        fully_shard(unit, mesh=mesh)
    fully_shard(denoiser, mesh=mesh)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (a collective: every rank calls it), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
