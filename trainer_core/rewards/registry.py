"""Every reward by name, built only when a mix uses it.

A module under `trainer_core.rewards` that defines `REWARDS = (RewardSpec(...), ...)` contributes its
rewards: listing them loads no model, and a job builds only the rewards of its mix, once. A reward with
weights reads them from a local path (`rewards.models.NAME.path`, or `<models dir>/rewards/NAME`); a path
that is missing is refused before a job starts, naming the path and what to put there. Adding a reward is
one file (and its test).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from trainer_core.rewards.base import Reward, RewardModelConfig


@dataclass(frozen=True)
class RewardSpec:
    """One reward the studio offers.

    name: what a mix calls it.
    description: one line a person reads in Train.
    build: (its config, its weights' path or None, a dict the rewards of one mix share) -> the reward.
    weights: what its weights are and where they come from; "" for a reward that needs none.
    files: what must be inside the weights directory (checked before a job starts).
    requires: what else it needs, checked before a job starts: () -> what is missing, or "".
    prompt_problem: for a reward that reads its prompts (the shapes world's parse them): prompt -> why it
        cannot score images of it, or "" (checked on a prompts file before a job starts).
    """

    name: str
    description: str
    build: Callable[[RewardModelConfig, Path | None, dict[str, Any]], Reward]
    weights: str = ""
    files: tuple[str, ...] = ()
    requires: Callable[[], str] | None = None
    prompt_problem: Callable[[str], str] | None = None

    def weights_path(self, config: RewardModelConfig, models_dir: Path | None) -> Path | None:
        """Where its weights are looked for (None for a reward without weights)."""
        if not self.weights:
            return None
        if config.path:  # relative: inside the models directory, as the web app confines it
            return (models_dir or Path("models")) / os.path.expanduser(config.path)
        return (models_dir or Path("models")) / "rewards" / self.name

    def missing(self, config: RewardModelConfig, models_dir: Path | None) -> str:
        """Why it cannot be built (its weights or what else it requires), or "" when it can."""
        problem = self.requires() if self.requires is not None else ""
        path = self.weights_path(config, models_dir)
        if problem or path is None:
            return problem
        # os.path's checks never raise, even on a name too long for the filesystem
        absent = [name for name in self.files if not os.path.exists(path / name)] if os.path.isdir(path) else []
        if os.path.exists(path) and not absent:
            return ""
        what = f"{path} lacks {', '.join(absent)}" if absent else f"{path} does not exist"
        return f"{what}; put {self.weights} there, or set rewards.models.{self.name}.path"


@cache
def reward_specs() -> dict[str, RewardSpec]:
    """Every reward, by name, from the modules of this package."""
    import trainer_core.rewards as package

    found: dict[str, RewardSpec] = {}
    for module in pkgutil.iter_modules(package.__path__):
        for spec in getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "REWARDS", ()):
            found[spec.name] = spec
    return dict(sorted(found.items()))


def build_rewards(
    names: list[str], configs: dict[str, RewardModelConfig] | None = None, models_dir: Path | None = None
) -> dict[str, Reward]:
    """The named rewards, each built once, sharing what rewards of one mix can share."""
    specs = reward_specs()
    unknown = [name for name in names if name not in specs]
    if unknown:
        raise ValueError(f"rewards: unknown {unknown[0]!r}; known: {', '.join(specs)}")
    shared: dict[str, Any] = {}
    built = {}
    for name in dict.fromkeys(names):
        spec, config = specs[name], (configs or {}).get(name, RewardModelConfig())
        problem = spec.missing(config, models_dir)
        if problem:
            raise ValueError(f"rewards.weights.{name}: {problem}")
        built[name] = spec.build(config, spec.weights_path(config, models_dir), shared)
    return built
