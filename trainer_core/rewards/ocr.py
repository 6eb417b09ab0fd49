"""OCR: does the image spell the text its prompt asks for in quotes?

score = max(0, 1 - edit_distance(asked, read) / len(asked)), both lower-cased with spaces removed (as
Flow-GRPO's OCR reward compares them), where `asked` is the first text in double quotes in the prompt and
`read` is what Tesseract reads in the image. Tesseract (Debian's `tesseract-ocr`, called through
`pytesseract`) runs offline on a CPU with the language data the package installs and is deterministic;
EasyOCR would need its detector and recogniser weights fetched and a second torch model beside the one
being trained.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainer_core.rewards.base import Reward, RewardModelConfig
from trainer_core.rewards.registry import RewardSpec

_QUOTED = re.compile(r'"([^"]+)"')


def asked_text(prompt: str) -> str:
    """The first text in double quotes, or an error naming the prompt."""
    match = _QUOTED.search(prompt)
    if not match:
        raise ValueError(f'prompt {prompt!r} asks for no text in double quotes ("...") for the ocr reward to read')
    return match.group(1)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions, each 1."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _normalise(text: str) -> str:
    return "".join(text.lower().split())


class OcrReward(Reward):
    name = "ocr"

    def __init__(self, upscale_to: int = 512) -> None:
        self.upscale_to = upscale_to  # Tesseract reads small text poorly: small images are enlarged first

    def read(self, image: np.ndarray) -> str:
        import pytesseract

        picture = Image.fromarray(image)
        if max(picture.size) < self.upscale_to:
            factor = self.upscale_to / max(picture.size)
            picture = picture.resize((round(picture.width * factor), round(picture.height * factor)), Image.LANCZOS)
        return pytesseract.image_to_string(picture)

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        scores = []
        for image, prompt in zip(images, prompts, strict=True):
            asked = _normalise(asked_text(prompt))
            read = _normalise(self.read(image))
            scores.append(max(0.0, 1 - edit_distance(asked, read) / len(asked)))
        return np.asarray(scores)


def _tesseract_missing() -> str:
    if shutil.which("tesseract") is None:
        return "the tesseract program is not installed; install Debian's tesseract-ocr (apt-get install tesseract-ocr)"
    try:
        import pytesseract  # noqa: F401
    except ImportError:
        return "pytesseract is not installed in this Python (pip install pytesseract)"
    return ""


def _build(config: RewardModelConfig, path: Path | None, shared: dict[str, Any]) -> Reward:
    return OcrReward()


REWARDS = (
    RewardSpec(
        "ocr",
        'any model: how closely the image spells the prompt\'s "quoted text" (Tesseract, edit distance)',
        _build,
        requires=_tesseract_missing,
    ),
)
