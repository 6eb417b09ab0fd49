"""Preference labels in the database and their images in the data directory.

Images are stored once, by content: the SHA-256 of the pixels (shape and RGB bytes) names the PNG, so
one image labelled many times, or imported twice, is one file. A label is stored image files first,
row second, each write atomic: a crash can leave an unreferenced image, never a row without its files.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from PIL import Image
from sqlalchemy import delete, func, select

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import PreferenceLabel
from trainer_core.files import write_atomic

CHOICES = ("a", "b", "tie")


@dataclass(frozen=True)
class LabelRecord:
    """One label as stored: image paths relative to the data directory."""

    id: int
    prompt: str
    image_a: str
    image_b: str
    choice: str
    labeller: str
    created_at: datetime
    seed_a: int | None = None
    seed_b: int | None = None
    checkpoint_a: int | None = None
    checkpoint_b: int | None = None
    model: str | None = None
    job_id: int | None = None
    iteration: int | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class NewLabel:
    """A label to store; its images are already in the data directory (see `LabelStore.store_image`)."""

    prompt: str
    image_a: str
    image_b: str
    choice: str
    labeller: str
    seed_a: int | None = None
    seed_b: int | None = None
    checkpoint_a: int | None = None
    checkpoint_b: int | None = None
    model: str | None = None
    job_id: int | None = None
    iteration: int | None = None
    session_id: str | None = None
    created_at: datetime | None = None  # now, unless imported with its own time

    def __post_init__(self) -> None:
        if self.choice not in CHOICES:
            raise ValueError(f"choice: must be a, b or tie, got {self.choice!r}")
        if not self.prompt.strip():
            raise ValueError("prompt: must not be empty")
        if len(self.prompt) > 500:
            raise ValueError(f"prompt: at most 500 characters, got {len(self.prompt)}")
        if len(self.labeller) > 120:
            raise ValueError(f"labeller: at most 120 characters, got {len(self.labeller)}")


def image_digest(image: np.ndarray) -> str:
    """The SHA-256 of an RGB uint8 image's shape and pixels."""
    pixels = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()


class LabelStore:
    def __init__(self, database: Database, data_dir: DataDir) -> None:
        self.db, self.data_dir = database, data_dir

    # --- images ---------------------------------------------------------------------------------

    def store_image(self, image: np.ndarray) -> str:
        """Store an RGB uint8 image [H, W, 3] once; returns its path relative to the data directory."""
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image: expected uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
        digest = image_digest(image)
        path = self.data_dir.label_images / digest[:2] / f"{digest}.png"
        if not path.is_file():
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            write_atomic(path, buffer.getvalue())
        return self.data_dir.relative(path)

    def load_image(self, relative: str) -> np.ndarray:
        with Image.open(self.data_dir.inside(relative)) as image:
            return np.asarray(image.convert("RGB"))

    # --- labels ---------------------------------------------------------------------------------

    def add(self, label: NewLabel) -> int:
        return self.add_many([label])[0]

    def add_many(self, labels: list[NewLabel]) -> list[int]:
        """Store labels in one transaction: all or none."""
        for label in labels:
            for image in (label.image_a, label.image_b):
                if not self.data_dir.inside(image).is_file():
                    raise ValueError(f"image: {image} is not stored in the data directory")
        with self.db.session() as session:
            rows = [
                PreferenceLabel(
                    prompt=label.prompt,
                    image_a=label.image_a,
                    image_b=label.image_b,
                    choice=label.choice,
                    labeler=label.labeller,
                    seed_a=label.seed_a,
                    seed_b=label.seed_b,
                    checkpoint_a=label.checkpoint_a,
                    checkpoint_b=label.checkpoint_b,
                    model=label.model,
                    job_id=label.job_id,
                    iteration=label.iteration,
                    session_id=label.session_id,
                    **({"created_at": label.created_at} if label.created_at else {}),
                )
                for label in labels
            ]
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]

    def delete(self, label_id: int) -> bool:
        """Remove one label (an undo); its images stay, as other labels may share them."""
        with self.db.session() as session:
            return session.execute(delete(PreferenceLabel).where(PreferenceLabel.id == label_id)).rowcount == 1

    def count(self, session_id: str | None = None) -> int:
        query = select(func.count(PreferenceLabel.id))
        if session_id is not None:
            query = query.where(PreferenceLabel.session_id == session_id)
        with self.db.session() as session:
            return int(session.scalar(query) or 0)

    def all(self, session_id: str | None = None) -> list[LabelRecord]:
        """Every label (of one session), oldest first."""
        query = select(PreferenceLabel).order_by(PreferenceLabel.created_at, PreferenceLabel.id)
        if session_id is not None:
            query = query.where(PreferenceLabel.session_id == session_id)
        with self.db.session() as session:
            return [_record(row) for row in session.scalars(query)]

    def get(self, label_id: int) -> LabelRecord | None:
        with self.db.session() as session:
            row = session.get(PreferenceLabel, label_id)
            return _record(row) if row else None


def _record(row: PreferenceLabel) -> LabelRecord:
    return LabelRecord(
        id=row.id,
        prompt=row.prompt,
        image_a=row.image_a,
        image_b=row.image_b,
        choice=row.choice,
        labeller=row.labeler,
        created_at=row.created_at,
        seed_a=row.seed_a,
        seed_b=row.seed_b,
        checkpoint_a=row.checkpoint_a,
        checkpoint_b=row.checkpoint_b,
        model=row.model,
        job_id=row.job_id,
        iteration=row.iteration,
        session_id=row.session_id,
    )
