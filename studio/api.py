"""`Studio`: everything the web UI may do, in one place. The UI imports nothing else from the project.

Configs cross this boundary as plain nested dicts (the YAML shape); errors as `ConfigError` /
`JobError` / `ValueError` whose message names the field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import JobStatus
from studio.compare import BASE, CompareResult, compare_checkpoints
from studio.export import export_checkpoint
from studio.jobs import JobError, JobService, JobView, validate_config
from trainer_core.config import (
    ALGORITHMS,
    LR_SCHEDULES,
    ConfigError,
    TrainConfig,
    field_docs,
    load_preset,
    preset_names,
    to_dict,
)
from trainer_core.lora_export import FORMATS
from trainer_core.model_zoo import BUILTIN_MODELS
from trainer_core.samplers import SOLVERS

DEFAULT_PRESET = "shapes-smoke"
__all__ = ["BASE", "ConfigError", "JobError", "JobStatus", "JobView", "Studio"]


@dataclass
class JobDetail:
    view: JobView
    grids: list[tuple[int, str]]  # (iteration, PNG path), oldest first
    log_tail: str


class Studio:
    def __init__(self, data_dir: DataDir, db_url: str | None = None) -> None:
        self.data_dir = data_dir.create()
        self.jobs = JobService(Database.open(db_url or data_dir.default_url()), self.data_dir)

    # --- the Train tab -------------------------------------------------------------------------

    def models(self) -> list[str]:
        """Built-in models, then local diffusers directories under the data directory's `models/`."""
        found = self.data_dir.models.iterdir() if self.data_dir.models.is_dir() else []
        local = sorted(str(p) for p in found if (p / "model_index.json").is_file())
        return [*BUILTIN_MODELS, *local]

    @staticmethod
    def rewards() -> list[str]:
        from trainer_core.rewards.builtin import builtin_rewards

        return sorted(builtin_rewards())

    @staticmethod
    def presets() -> list[str]:
        return preset_names()

    @staticmethod
    def algorithms() -> list[str]:
        return list(ALGORITHMS)

    @staticmethod
    def solvers() -> list[str]:
        return list(SOLVERS)

    @staticmethod
    def lr_schedules() -> list[str]:
        return list(LR_SCHEDULES)

    @staticmethod
    def export_formats() -> list[str]:
        return list(FORMATS)

    @staticmethod
    def preset_config(name: str = DEFAULT_PRESET) -> dict[str, Any]:
        return to_dict(load_preset(name))

    @staticmethod
    def field_help() -> dict[str, str]:
        """ "section.field" -> its documentation line, from the config dataclasses' docstrings."""
        docs = dict(field_docs(TrainConfig))
        hints = typing.get_type_hints(TrainConfig)
        for field in dataclasses.fields(TrainConfig):
            if dataclasses.is_dataclass(hints[field.name]):
                docs.update({f"{field.name}.{k}": v for k, v in field_docs(hints[field.name]).items()})
        return docs

    @staticmethod
    def validate(config: dict[str, Any]) -> dict[str, Any]:
        """The config as the job will run it; raises ConfigError naming the first bad field."""
        return to_dict(validate_config(config))

    @staticmethod
    def config_from_yaml(text: str) -> dict[str, Any]:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config: not valid YAML ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError("config: YAML must be a mapping of sections")
        return Studio.validate(data)

    @staticmethod
    def config_to_yaml(config: dict[str, Any]) -> str:
        return yaml.safe_dump(config, sort_keys=False)

    def submit(self, config: dict[str, Any], name: str = "") -> int:
        return self.jobs.submit(config, name)

    # --- the Jobs tab --------------------------------------------------------------------------

    def list_jobs(self, limit: int = 100) -> list[JobView]:
        return self.jobs.list_jobs(limit)

    def job_detail(self, job_id: int, log_lines: int = 30) -> JobDetail:
        view = self.jobs.view(job_id)
        log_path = self.data_dir.run_dir(job_id) / "worker.log"
        tail = ""
        if log_path.is_file():
            text = log_path.read_text(errors="replace").replace("\r", "\n")
            tail = "\n".join(line for line in text.splitlines() if line.strip())
            tail = "\n".join(tail.splitlines()[-log_lines:])
        return JobDetail(view, self.jobs.sample_grids(job_id), tail)

    def job_metrics(self, job_id: int) -> dict[str, list[tuple[int, float]]]:
        """name -> [(iteration, value)]: every metric row of the job (read only when curves must be redrawn)."""
        return self.jobs.metrics(job_id)

    def reward_series(self, job_id: int) -> list[str]:
        """The metric names of the job's reward curves: reward_mean and one per reward of its mix (not
        the timing `reward_s`, which shares the prefix)."""
        weights = self.jobs.get(job_id).config.get("rewards", {}).get("weights", {})
        return ["reward_mean", *(f"reward_{name}" for name in sorted(weights))]

    def sample_grids(self, job_id: int) -> list[tuple[int, str]]:
        return self.jobs.sample_grids(job_id)

    def control(self, job_id: int, action: str) -> str:
        """cancel | pause | resume | retry; returns the job's status after it."""
        if action not in ("cancel", "pause", "resume", "retry"):
            raise ValueError(f"action: must be cancel, pause, resume or retry, got {action!r}")
        getattr(self.jobs, action)(job_id)
        return self.jobs.get(job_id).status

    def job_config(self, job_id: int) -> dict[str, Any]:
        return self.jobs.get(job_id).config

    # --- the Compare and Export tabs -----------------------------------------------------------

    def checkpoint_choices(self, limit: int = 100) -> list[tuple[str, str]]:
        """(label, value) pairs: the base model first, then every job's checkpoints, newest first."""
        choices = [("base model", BASE)]
        for checkpoint in self.jobs.recent_checkpoints(limit):
            choices.append((f"job {checkpoint.job_id} · iteration {checkpoint.iteration}", str(checkpoint.id)))
        return choices

    @staticmethod
    def prompt_sets() -> list[str]:
        """Named prompt lists for Compare: a few held-out prompts of each category, or of one category."""
        from trainer_core.shapes.grammar import CATEGORIES

        return ["heldout: 2 per category", *(f"heldout: {c}" for c in CATEGORIES)]

    @staticmethod
    def prompt_set(name: str) -> list[str]:
        from studio.bench.speed import heldout_subset

        if name not in Studio.prompt_sets():
            raise ValueError(f"prompt set: unknown {name!r}; allowed: {', '.join(Studio.prompt_sets())}")
        if name == "heldout: 2 per category":
            return [spec.prompt for spec in heldout_subset(2)]
        category = name.removeprefix("heldout: ")
        return [spec.prompt for spec in heldout_subset(8) if spec.category == category]

    def compare(
        self, checkpoints: list[str], prompts: list[str], seeds: list[int], heldout_per_category: int = 0
    ) -> CompareResult:
        chosen: list[int | str] = [c if c == BASE else int(c) for c in checkpoints]
        return compare_checkpoints(self.jobs, chosen, prompts, seeds, heldout_per_category)

    def export(self, checkpoint: str, fmt: str, name: str = "") -> Path:
        if checkpoint in ("", BASE):
            raise ValueError("checkpoint: pick a trained checkpoint (the base model has no LoRA to export)")
        return export_checkpoint(self.jobs, int(checkpoint), fmt, name)
