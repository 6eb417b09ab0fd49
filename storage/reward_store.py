"""Fitted preference rewards on disk: `rewards/NAME/v0001/`, `v0002/`, ...

A version is written whole into a temporary directory and renamed into place, so a reader sees a
version complete or not at all, and an existing version is never overwritten: a job that trained on
`NAME@v1` can always find what it used.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from storage.data_dir import DataDir

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
VERSION_PATTERN = re.compile(r"^v(\d{4,})$")


def check_reward_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ValueError(
            f"name: {name!r} is not allowed; use 1-63 lowercase letters, digits, '-' or '_', starting with a "
            "letter or digit"
        )
    return name


class RewardStore:
    def __init__(self, data_dir: DataDir) -> None:
        self.root = data_dir.rewards

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if NAME_PATTERN.match(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / check_reward_name(name)
        if not folder.is_dir():
            return []
        found = (VERSION_PATTERN.match(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(match.group(1)) for match in found if match)

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def directory(self, name: str, version: int) -> Path:
        return self.root / check_reward_name(name) / f"v{version:04d}"

    def publish(self, name: str, write: Callable[[Path, int], None]) -> int:
        """Write a new version with `write(directory, version)` and put it in place; returns the version."""
        folder = self.root / check_reward_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            version = (self.latest(name) or 0) + 1
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-"))
            try:
                write(staging, version)
                staging.rename(self.directory(name, version))
                return version
            except OSError:
                if not self.directory(name, version).exists():
                    raise
                # another process took this version number first: write the next one
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"rewards/{name}: could not claim a new version")
