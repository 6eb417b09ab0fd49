"""A fitted preference model on disk, and the reward that scores with it.

DIR/weights.safetensors   weights, mean, scale (and the weights' covariance) of the linear Bradley-Terry model (float64)
DIR/card.json             what it was fitted on and how well it does (`PreferenceCard`)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trainer_core.preference.bradley_terry import LinearPreferenceModel
from trainer_core.preference.features import ImageFeatures, build_features
from trainer_core.rewards.base import Reward

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"


@dataclass(frozen=True)
class PreferenceCard:
    """What a fitted preference reward is: its name, version, features and how well it predicts."""

    name: str
    version: int
    features: str  # the extractor's spec, e.g. "shapes-stats" or "clip:/models/clip"
    n_labels: int
    choices: dict[str, int]  # labels per choice: a, b, tie
    cv_accuracy: float  # k-fold pairwise accuracy on held-out labels (ties left out)
    cv_standard_error: float
    cv_folds: int
    penalty: str  # what the fit was regularised with, e.g. "l1=0.1"
    labels_first: str  # ISO time of the oldest label
    labels_last: str  # ISO time of the newest label
    labellers: list[str]
    fit_seconds: float
    created_at: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """How a reward mix names exactly this version."""
        return f"pref:{self.name}@v{self.version}"

    def summary(self) -> str:
        """One line for a UI or a table."""
        return (
            f"{self.reference} · {self.features} · {self.n_labels} labels · CV accuracy "
            f"{self.cv_accuracy:.3f} ± {self.cv_standard_error:.3f} · labels {self.labels_first[:10]} to "
            f"{self.labels_last[:10]}"
        )

    @classmethod
    def from_json(cls, data: dict[str, object]) -> PreferenceCard:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


def save_preference_model(directory: Path, model: LinearPreferenceModel, card: PreferenceCard) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"weights": model.weights, "mean": model.mean, "scale": model.scale, "covariance": model.covariance}
    tensors = {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items() if a is not None}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "bradley-terry-linear"})
    (directory / CARD_FILE).write_text(json.dumps(asdict(card), indent=2))


def load_card(directory: Path) -> PreferenceCard:
    return PreferenceCard.from_json(json.loads((directory / CARD_FILE).read_text()))


def load_preference_model(directory: Path) -> tuple[LinearPreferenceModel, PreferenceCard]:
    tensors = load_file(str(directory / WEIGHTS_FILE))
    model = LinearPreferenceModel(
        *(tensors[name].numpy() for name in ("weights", "mean", "scale")),
        covariance=tensors["covariance"].numpy() if "covariance" in tensors else None,
    )
    return model, load_card(directory)


class PreferenceReward(Reward):
    """The Bradley-Terry score of each image under a fitted preference model: higher is preferred, and a
    difference of 1 is odds of e to 1."""

    def __init__(
        self, name: str, model: LinearPreferenceModel, features: ImageFeatures, card: PreferenceCard | None = None
    ) -> None:
        self.name, self.model, self.features, self.card = name, model, features, card

    @classmethod
    def load(cls, directory: Path, name: str | None = None) -> PreferenceReward:
        model, card = load_preference_model(directory)
        return cls(name or card.reference, model, build_features(card.features), card)

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return self.model.score(self.features(images, prompts))
