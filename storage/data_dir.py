"""The one data directory: the database, run directories (metrics, images, checkpoints), exports,
preference labels' images and fitted preference rewards.

Nothing is written outside it; stored paths are relative to it, so the directory can move.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.db import sqlite_url

ENV_VAR = "VGRPO_HOME"
DEFAULT = "studio_data"


class DataDir:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get(ENV_VAR) or DEFAULT).resolve()

    @property
    def database(self) -> Path:
        return self.root / "studio.db"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def models(self) -> Path:
        """Local diffusers model directories the studio offers as base models."""
        return self.root / "models"

    @property
    def label_images(self) -> Path:
        """The images people labelled, content-addressed: `labels/images/ab/abcdef....png`."""
        return self.root / "labels" / "images"

    @property
    def rewards(self) -> Path:
        """Fitted preference rewards: `rewards/NAME/v0001/` holds one version's weights and card."""
        return self.root / "rewards"

    @property
    def prompts(self) -> Path:
        """Prompts files the web app's configs may name (`rollout.prompts: mine.txt`)."""
        return self.root / "prompts"

    @property
    def label_folders(self) -> Path:
        """Folders of labels (labels.jsonl + images/) the web app imports from and exports to."""
        return self.root / "labels" / "folders"

    def create(self) -> DataDir:
        folders = (self.runs, self.exports, self.models, self.prompts, self.label_images, self.label_folders)
        for path in (self.root, *folders, self.rewards):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def default_url(self) -> str:
        return sqlite_url(self.database)

    def run_dir(self, job_id: int) -> Path:
        return self.runs / f"job_{job_id:06d}"

    def inside(self, relative: str | Path) -> Path:
        """The absolute path of a stored relative path, refusing anything that leaves the directory."""
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"path: {relative!s} is outside the data directory {self.root}")
        return path

    def relative(self, path: str | Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))
