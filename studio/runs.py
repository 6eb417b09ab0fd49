"""A training run's directory, written so that a crash loses at most the iteration in flight.

RUN/config.yaml
RUN/metrics.jsonl                one JSON object per iteration, appended and fsynced
RUN/samples/iter_000005.png      sample grids on fixed prompts and seeds
RUN/checkpoints/iter_000010.safetensors   LoRA weights
RUN/checkpoints/iter_000010.state.pt      optimizer and random states (weights_only)
RUN/checkpoints/final.safetensors
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from trainer_core.files import atomic_path, write_atomic

_CHECKPOINT = re.compile(r"^iter_(\d{6})\.safetensors$")


class RunDirectory:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.samples = self.root / "samples"
        self.checkpoints = self.root / "checkpoints"
        self.metrics_path = self.root / "metrics.jsonl"
        self.config_path = self.root / "config.yaml"

    def create(self, config_yaml: str) -> None:
        for folder in (self.root, self.samples, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.config_path, config_yaml.encode())

    def exists(self) -> bool:
        return self.config_path.is_file()

    # --- metrics -----------------------------------------------------------------------------

    def read_metrics(self) -> list[dict[str, float]]:
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line torn by a crash ends the record
        return rows

    def append_metrics(self, row: dict[str, float]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_metrics(self, last_iteration: int) -> None:
        """Keep only iterations 1..last_iteration, so a resume neither skips nor repeats one."""
        rows = [r for r in self.read_metrics() if r["iteration"] <= last_iteration]
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())

    # --- checkpoints -------------------------------------------------------------------------

    def checkpoint_paths(self, iteration: int) -> tuple[Path, Path]:
        stem = self.checkpoints / f"iter_{iteration:06d}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".state.pt")

    def latest_checkpoint(self) -> int | None:
        """Highest iteration with both its LoRA and its state on disk."""
        found = []
        for path in self.checkpoints.glob("iter_*.safetensors"):
            match = _CHECKPOINT.match(path.name)
            if match and self.checkpoint_paths(int(match.group(1)))[1].is_file():
                found.append(int(match.group(1)))
        return max(found, default=None)

    def save_state(self, iteration: int, state: dict[str, object]) -> None:
        with atomic_path(self.checkpoint_paths(iteration)[1]) as partial:
            torch.save(state, partial)

    def load_state(self, iteration: int) -> dict[str, object]:
        return torch.load(self.checkpoint_paths(iteration)[1], weights_only=True)

    def sample_path(self, iteration: int) -> Path:
        return self.samples / f"iter_{iteration:06d}.png"
