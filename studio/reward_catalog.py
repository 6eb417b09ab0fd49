"""Every reward a config may name: the registry's (`trainer_core.rewards.registry`, learned ones read
from the data directory's `models/rewards/NAME` unless the mix says where) and the fitted preference
rewards of the data directory.

A preference reward is named `pref:NAME` (its latest version) or `pref:NAME@vN` (exactly version N). A
job is pinned at submit: `pref:NAME` becomes `pref:NAME@vN` in its stored config, so refitting later
makes a new version and never changes what a job trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.data_dir import DataDir
from storage.reward_store import RewardStore
from trainer_core.config import ConfigError
from trainer_core.preference.artifact import PreferenceCard, PreferenceReward, load_card
from trainer_core.rewards.base import Reward, RewardMixConfig, RewardModelConfig
from trainer_core.rewards.registry import build_rewards, reward_specs

PREFIX = "pref:"
_REFERENCE = re.compile(r"^pref:([^@]*)(?:@v(\d+))?$")


@dataclass(frozen=True)
class PreferenceName:
    name: str
    version: int | None  # None: the latest

    @classmethod
    def parse(cls, text: str) -> PreferenceName:
        match = _REFERENCE.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a preference reward; write pref:NAME or pref:NAME@vN")
        return cls(match.group(1), int(match.group(2)) if match.group(2) else None)

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}" + (f"@v{self.version}" if self.version is not None else "")


def is_preference(name: str) -> bool:
    return name.startswith(PREFIX)


class RewardCatalog:
    """Lists, checks, pins and builds rewards by name; only `build` loads anything."""

    def __init__(self, data_dir: DataDir | None = None) -> None:
        data_dir = data_dir or DataDir()
        self.store = RewardStore(data_dir)
        self.models_dir = data_dir.models

    def names(self) -> list[str]:
        """The registry's rewards, then `pref:NAME` for each fitted preference reward."""
        return [*reward_specs(), *self.preference_names()]

    def preference_names(self) -> list[str]:
        return [f"{PREFIX}{name}" for name in self.store.names()]

    def resolve(self, reference: str) -> PreferenceName:
        """The exact version a preference reference means; a bad one raises naming the field."""
        field = f"rewards.weights.{reference}"
        try:
            parsed = PreferenceName.parse(reference)
            versions = self.store.versions(parsed.name)
        except ValueError as error:
            raise ConfigError(f"{field}: {error}") from None
        if not versions:
            known = ", ".join(self.preference_names()) or "none yet (fit one in the Label tab or with vgrpo reward fit)"
            raise ConfigError(f"{field}: no preference reward {parsed.name!r}; fitted: {known}")
        if parsed.version is None:
            return PreferenceName(parsed.name, versions[-1])
        if parsed.version not in versions:
            listed = ", ".join(f"v{v}" for v in versions)
            raise ConfigError(f"{field}: {parsed.name} has no version v{parsed.version}; it has {listed}")
        return parsed

    def card(self, reference: str) -> PreferenceCard:
        exact = self.resolve(reference)
        return load_card(self.store.directory(exact.name, exact.version or 0))

    def check(self, weights: dict[str, float], mix: RewardMixConfig | None = None) -> None:
        """Every reward the mix names exists and, if it has weights, finds them (the error names the first
        that does not, and what to put where). `weights` alone: the names, with default model configs."""
        monitor = mix.monitor if mix is not None else ()
        specs = reward_specs()
        for section, names in (("weights", weights), ("monitor", monitor)):
            for name in names:
                if is_preference(name):
                    self.resolve(name)
                elif name not in specs:
                    available = ", ".join(self.names())
                    raise ConfigError(f"rewards.{section}.{name}: unknown reward; available: {available}")
                else:
                    config = mix.model_config(name) if mix is not None else RewardModelConfig()
                    problem = specs[name].missing(config, self.models_dir)
                    if problem:
                        raise ConfigError(f"rewards.{section}.{name}: {problem}")

    def pin(self, weights: dict[str, float]) -> dict[str, float]:
        """The weights with every `pref:NAME` replaced by its latest version `pref:NAME@vN`."""
        self.check(weights)
        pinned: dict[str, float] = {}
        for name, weight in weights.items():
            key = str(self.resolve(name)) if is_preference(name) else name
            if key in pinned:
                raise ConfigError(f"rewards.weights.{name}: names {key}, which the mix already has")
            pinned[key] = weight
        return pinned

    def build(self, names: list[str], mix: RewardMixConfig | None = None) -> dict[str, Reward]:
        """The rewards of a mix, loaded once each, under the names the mix uses (model configs from `mix`)."""
        self.check(dict.fromkeys(names, 1.0), mix)
        configs = {name: mix.model_config(name) for name in names} if mix is not None else {}
        rewards = build_rewards([n for n in names if not is_preference(n)], configs, self.models_dir)
        for name in names:
            if is_preference(name):
                exact = self.resolve(name)
                rewards[name] = PreferenceReward.load(self.store.directory(exact.name, exact.version or 0), name)
        return rewards
