"""Files a config or a request names, and where they are looked for.

A relative path in a stored config names something inside the data directory: `rollout.prompts` a file
in `prompts/`, `model.name` a diffusers directory in `models/`, `rewards.models.NAME.path` reward weights in
`models/`. An absolute path is the machine owner's: the command line turns its own relative paths into
absolute ones (against its working directory) before it stores a job, since the worker runs elsewhere.

The web app takes only relative paths without `..` (`confine_config`, `confined`), so whatever a web user
types reaches nothing outside those folders; files the owner linked into them are the owner's choice.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath

from storage.data_dir import DataDir
from trainer_core.config import ConfigError, TrainConfig
from trainer_core.model_zoo import BUILTIN_MODELS
from trainer_core.prompt_source import PromptSource


def confined(value: str, root: Path, field: str, data_dir: DataDir) -> Path:
    """`value`, a relative path a web user typed, inside `root` (a folder of `data_dir`); a ConfigError
    naming `field` when it is absolute, climbs out with `..`, starts at a home directory or is empty."""
    text = str(value).strip()
    where = f"name a path inside {root.relative_to(data_dir.root)}/ of the data directory"
    if not text:
        raise ConfigError(f"{field}: empty; {where}")
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if text.startswith(("/", "\\", "~")) or (len(text) > 1 and text[1] == ":"):
        raise ConfigError(f"{field}: absolute paths are not accepted from the web app; {where}")
    if ".." in parts:
        raise ConfigError(f"{field}: '..' is not accepted from the web app; {where}")
    if "\x00" in text:
        raise ConfigError(f"{field}: holds a NUL character; {where}")
    return root.joinpath(*parts)


def confine_config(config: TrainConfig, data_dir: DataDir) -> None:
    """Refuse, by field, every path of a web user's config that is not inside the data directory, and a
    config that would load pickled weights (only the owner may allow that)."""
    if config.model.name not in BUILTIN_MODELS:
        confined(config.model.name, data_dir.models, "model.name", data_dir)
    if config.rollout.prompts not in PromptSource.SPECS:
        confined(config.rollout.prompts, data_dir.prompts, "rollout.prompts", data_dir)
    for name, section in config.rewards.models.items():
        if section.get("path"):
            confined(section["path"], data_dir.models, f"rewards.models.{name}.path", data_dir)
    if not config.model.safetensors_only:
        raise ConfigError(
            "model.safetensors_only: only the machine's owner may load pickled weights (from the command line)"
        )


def in_data_dir(config: TrainConfig, data_dir: DataDir) -> TrainConfig:
    """The config with a relative prompts file made absolute inside the data directory's prompts/ (models
    and reward weights are looked up in models/ by their loaders)."""
    rollout = config.rollout
    if rollout.prompts in PromptSource.SPECS or Path(os.path.expanduser(rollout.prompts)).is_absolute():
        return config
    return dataclasses.replace(
        config, rollout=dataclasses.replace(rollout, prompts=str(data_dir.prompts / rollout.prompts))
    )


def owner_paths(config: TrainConfig, data_dir: DataDir, cwd: Path | None = None) -> TrainConfig:
    """The command line's config: relative paths that exist against the working directory (and not in
    the data directory) made absolute, so the job finds them from wherever its worker runs."""
    cwd = cwd or Path.cwd()

    def absolute(value: str, inside: Path) -> str:
        local = cwd / os.path.expanduser(value)
        if os.path.isabs(os.path.expanduser(value)) or os.path.exists(inside / value) or not os.path.exists(local):
            return value
        return str(local.resolve())

    rollout = config.rollout
    if rollout.prompts not in PromptSource.SPECS:
        rollout = dataclasses.replace(rollout, prompts=absolute(rollout.prompts, data_dir.prompts))
    model = config.model
    if model.name not in BUILTIN_MODELS:
        model = dataclasses.replace(model, name=absolute(model.name, data_dir.models))
    models = {
        name: {**section, "path": absolute(section["path"], data_dir.models)} if section.get("path") else section
        for name, section in config.rewards.models.items()
    }
    rewards = dataclasses.replace(config.rewards, models=models)
    return dataclasses.replace(config, model=model, rollout=rollout, rewards=rewards)
