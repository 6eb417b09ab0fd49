"""Preference labels in and out of the studio (a folder with `labels.jsonl`), and fitting a preference
reward on them.

The folder layout, one JSON object per line, image paths relative to `labels.jsonl`:

    {"prompt": str, "image_a": "images/x.png", "image_b": "images/y.png", "choice": "a" | "b" | "tie",
     "labeller": str}

and optionally "created_at" (ISO 8601), "seed_a", "seed_b" (integers) and "model" (str). An import
checks every line and every image before it stores anything; a bad line is reported as
`FILE:LINE: field: what is wrong`, and labels already in the studio are not stored twice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from storage.labels import CHOICES, LabelRecord, LabelStore, NewLabel, image_digest
from storage.reward_store import RewardStore, check_reward_name
from trainer_core.files import TextFileError, read_text_file
from trainer_core.preference.artifact import PreferenceCard, load_card, save_preference_model
from trainer_core.preference.bradley_terry import BradleyTerryConfig, fit_with_validation, outcomes, shared_image_groups
from trainer_core.preference.features import ImageFeatures, build_features

LABELS_FILE = "labels.jsonl"
MIN_DECIDED_LABELS = 10
MAX_REPORTED_ERRORS = 20


class LabelImportError(ValueError):
    """An import refused: every problem found, one `FILE:LINE: field: what is wrong` per line."""


@dataclass(frozen=True)
class LabelSet:
    """Labels with their images in memory, ready to fit."""

    prompts: list[str]
    images_a: list[np.ndarray]
    images_b: list[np.ndarray]
    choices: list[str]
    labellers: list[str]
    created: list[datetime]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class ImportResult:
    added: int
    already_stored: int


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat(timespec="seconds")


# --- reading a folder -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    number: int
    prompt: str
    image_a: np.ndarray
    image_b: np.ndarray
    choice: str
    labeller: str
    created_at: datetime | None
    seed_a: int | None
    seed_b: int | None
    model: str | None


def _load_image(directory: Path, value: Any, field: str) -> np.ndarray:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: must be a path relative to {LABELS_FILE}, got {value!r}")
    if Path(value).is_absolute():
        raise ValueError(f"{field}: must be relative to {LABELS_FILE}, got the absolute path {value!r}")
    path = (directory / value).resolve()
    if directory.resolve() not in path.parents:
        raise ValueError(f"{field}: {value!r} leaves the labels folder")
    if not path.is_file():
        raise ValueError(f"{field}: no file {value!r} beside {LABELS_FILE}")
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{field}: {value!r} is not a readable image ({error})") from None


def _parse_line(directory: Path, number: int, text: str) -> _Line:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"line: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"line: must be a JSON object, got {type(data).__name__}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt: must be a non-empty string, got {prompt!r}")
    if len(prompt) > 500:
        raise ValueError(f"prompt: at most 500 characters, got {len(prompt)}")
    choice = data.get("choice")
    if choice not in CHOICES:
        raise ValueError(f'choice: must be "a", "b" or "tie", got {choice!r}')
    labeller = data.get("labeller")
    if not isinstance(labeller, str) or len(labeller) > 120:
        raise ValueError(f"labeller: must be a string of at most 120 characters, got {labeller!r}")
    created_at = None
    if data.get("created_at") is not None:
        try:
            created_at = _utc(datetime.fromisoformat(str(data["created_at"])))
        except ValueError:
            raise ValueError(f"created_at: must be an ISO 8601 time, got {data['created_at']!r}") from None
    seeds = []
    for field in ("seed_a", "seed_b"):
        value = data.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{field}: must be an integer, got {value!r}")
        seeds.append(value)
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError(f"model: must be a string, got {model!r}")
    image_a = _load_image(directory, data.get("image_a"), "image_a")
    image_b = _load_image(directory, data.get("image_b"), "image_b")
    return _Line(number, prompt, image_a, image_b, choice, labeller, created_at, seeds[0], seeds[1], model)


def read_label_folder(directory: Path) -> list[_Line]:
    """Every line of DIR/labels.jsonl, checked; raises LabelImportError listing each bad line."""
    directory = Path(directory)
    path = directory / LABELS_FILE
    if not path.is_file():
        raise LabelImportError(f"{path}: no {LABELS_FILE} in {directory}")
    try:
        text = read_text_file(path)
    except TextFileError as error:
        raise LabelImportError(str(error)) from None
    lines, errors = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            lines.append(_parse_line(directory, number, raw))
        except ValueError as error:
            errors.append(f"{path}:{number}: {error}")
    if errors:
        more = f"\n... and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise LabelImportError("\n".join(errors[:MAX_REPORTED_ERRORS]) + more)
    if not lines:
        raise LabelImportError(f"{path}: holds no labels")
    return lines


# --- import and export ----------------------------------------------------------------------------


def _key(prompt: str, digest_a: str, digest_b: str, choice: str, labeller: str, when: datetime | None) -> tuple:
    return (prompt, digest_a, digest_b, choice, labeller, _iso(when) if when else None)


def import_labels(store: LabelStore, directory: Path) -> ImportResult:
    """Store every label of a folder, or none when any line is bad; labels already stored are skipped
    (the same prompt, images, choice and labeller, and the same time when the line has one)."""
    lines = read_label_folder(directory)
    stored = store.all()
    timed = {
        _key(r.prompt, Path(r.image_a).stem, Path(r.image_b).stem, r.choice, r.labeller, r.created_at) for r in stored
    }
    untimed = {key[:-1] for key in timed}
    new: list[NewLabel] = []
    duplicates = 0
    for line in lines:
        key = _key(
            line.prompt,
            image_digest(line.image_a),
            image_digest(line.image_b),
            line.choice,
            line.labeller,
            line.created_at,
        )
        if (key in timed) if line.created_at else (key[:-1] in untimed):
            duplicates += 1
            continue
        timed.add(key)
        untimed.add(key[:-1])
        new.append(
            NewLabel(
                prompt=line.prompt,
                image_a=store.store_image(line.image_a),
                image_b=store.store_image(line.image_b),
                choice=line.choice,
                labeller=line.labeller,
                seed_a=line.seed_a,
                seed_b=line.seed_b,
                model=line.model,
                created_at=line.created_at,
            )
        )
    store.add_many(new)
    return ImportResult(len(new), duplicates)


def export_labels(store: LabelStore, out: Path) -> int:
    """Write every stored label to a new folder OUT (labels.jsonl + images/); returns the count."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out: {out} is not empty; export into a new folder")
    labels = store.all()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        (staging / "images").mkdir()
        with (staging / LABELS_FILE).open("w", encoding="utf-8") as file:
            for label in labels:
                file.write(json.dumps(_export_line(store, label, staging)) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return len(labels)


def _export_line(store: LabelStore, label: LabelRecord, folder: Path) -> dict[str, Any]:
    names = []
    for image in (label.image_a, label.image_b):
        name = f"images/{Path(image).name}"
        if not (folder / name).exists():
            shutil.copyfile(store.data_dir.inside(image), folder / name)
        names.append(name)
    line: dict[str, Any] = {
        "prompt": label.prompt,
        "image_a": names[0],
        "image_b": names[1],
        "choice": label.choice,
        "labeller": label.labeller,
        "created_at": _iso(label.created_at),
    }
    line.update(
        {k: v for k, v in (("seed_a", label.seed_a), ("seed_b", label.seed_b), ("model", label.model)) if v is not None}
    )
    return line


# --- fitting --------------------------------------------------------------------------------------


def labels_from_store(store: LabelStore) -> LabelSet:
    records = store.all()
    return LabelSet(
        [r.prompt for r in records],
        [store.load_image(r.image_a) for r in records],
        [store.load_image(r.image_b) for r in records],
        [r.choice for r in records],
        [r.labeller for r in records],
        [_utc(r.created_at) for r in records],
    )


def labels_from_folder(directory: Path) -> LabelSet:
    lines = read_label_folder(directory)
    now = datetime.now(UTC)
    return LabelSet(
        [line.prompt for line in lines],
        [line.image_a for line in lines],
        [line.image_b for line in lines],
        [line.choice for line in lines],
        [line.labeller for line in lines],
        [line.created_at or now for line in lines],
    )


def compute_features(extractor: ImageFeatures, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
    """Features [N, D] of images that may differ in size (computed per size, in order)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(image.shape, []).append(index)
    parts: dict[int, np.ndarray] = {}
    for indices in by_shape.values():
        values = extractor(np.stack([images[i] for i in indices]), [prompts[i] for i in indices])
        parts.update(zip(indices, values, strict=True))
    return np.stack([parts[i] for i in range(len(images))])


def fit_preference_reward(
    labels: LabelSet,
    features: str,
    name: str,
    rewards: RewardStore,
    config: BradleyTerryConfig | None = None,
    extractor: ImageFeatures | None = None,
) -> PreferenceCard:
    """Fit a Bradley-Terry reward on the labels and store it as the next version of NAME; returns its card."""
    check_reward_name(name)
    config = config or BradleyTerryConfig()
    decided = sum(choice != "tie" for choice in labels.choices)
    if decided < MIN_DECIDED_LABELS:
        raise ValueError(
            f"labels: a fit needs at least {MIN_DECIDED_LABELS} labels that are not ties, there are {decided}"
        )
    started = time.monotonic()
    extractor = extractor or build_features(features)
    features_a = compute_features(extractor, labels.images_a, labels.prompts)
    features_b = compute_features(extractor, labels.images_b, labels.prompts)
    groups = shared_image_groups([image_digest(i) for i in labels.images_a], [image_digest(i) for i in labels.images_b])
    model, cv, penalty = fit_with_validation(features_a, features_b, outcomes(labels.choices), groups, config)
    seconds = time.monotonic() - started

    def write(directory: Path, version: int) -> None:
        card = PreferenceCard(
            name=name,
            version=version,
            features=extractor.spec,
            n_labels=len(labels),
            choices={choice: count for choice, count in sorted(Counter(labels.choices).items())},
            cv_accuracy=cv.accuracy,
            cv_standard_error=cv.standard_error,
            cv_folds=cv.folds,
            penalty=str(penalty),
            labels_first=_iso(min(labels.created)),
            labels_last=_iso(max(labels.created)),
            labellers=sorted(set(labels.labellers)),
            fit_seconds=round(seconds, 3),
            created_at=_iso(datetime.now(UTC)),
        )
        save_preference_model(directory, model, card)

    version = rewards.publish(name, write)
    return load_card(rewards.directory(name, version))
