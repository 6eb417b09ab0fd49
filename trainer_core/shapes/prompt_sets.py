"""Prompt sets of the shapes world.

- `train`: the grammar's sampler (`sample_spec`), which never produces
  UNSEEN_COMBOS.
- `heldout`: a fixed list of 306 prompts, committed as `prompt_sets/heldout.txt`
  and rebuilt bit for bit by `build_heldout()`. Categories, GenEval-like:

  single       one object, colour optional ("a red circle", "a square"): all 21
  colors       two single objects, colour binding ("a red circle and a blue circle"): 70
  count        2-4 objects of one kind ("three yellow circles"): all 63
  two_objects  two groups with counts ("two red circles and a blue square"): 76
  position     two groups and a relation ("a circle left of two squares"): 76

  Every UNSEEN_COMBOS triple appears in `count`, and `two_objects` and
  `position` each hold 12 prompts with at least one unseen group.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from trainer_core.files import read_text_file
from trainer_core.shapes.grammar import (
    CATEGORIES,
    COLORS,
    SHAPES,
    UNSEEN_COMBOS,
    ObjectGroup,
    PromptError,
    SceneSpec,
    parse_prompt,
    sample_spec,
)

HELDOUT_PATH = Path(__file__).with_name("prompt_sets") / "heldout.txt"
_HELDOUT_SEED = 20260425
_SAMPLED_SIZES = {"colors": 70, "two_objects": 76, "position": 76}
_UNSEEN_PER_CATEGORY = 12


@dataclass(frozen=True)
class PromptFileError(ValueError):
    """A prompts file line that is not in the grammar."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def build_heldout() -> list[SceneSpec]:
    """The held-out specs, in file order (deterministic)."""
    rng = random.Random(_HELDOUT_SEED)
    single = [SceneSpec((ObjectGroup(1, shape, color),)) for color in (None, *COLORS) for shape in SHAPES]
    count = [
        SceneSpec((ObjectGroup(n, shape, color),)) for n in (2, 3, 4) for color in (None, *COLORS) for shape in SHAPES
    ]
    sampled: dict[str, list[SceneSpec]] = {}
    for category, size in _SAMPLED_SIZES.items():
        chosen: dict[str, SceneSpec] = {}
        forced = _UNSEEN_PER_CATEGORY if category != "colors" else 0
        while len(chosen) < size:
            spec = sample_spec(rng, category, allow_unseen=True)
            if len(chosen) < forced and not spec.combos & UNSEEN_COMBOS:
                continue
            chosen.setdefault(spec.prompt, spec)
        sampled[category] = list(chosen.values())
    return single + sampled["colors"] + count + sampled["two_objects"] + sampled["position"]


def load_heldout() -> list[SceneSpec]:
    return read_prompts_file(HELDOUT_PATH)


def heldout_subset(per_category: int) -> list[SceneSpec]:
    """`per_category` held-out prompts of every category, evenly spread over the file."""
    specs = load_heldout()
    chosen: list[SceneSpec] = []
    for category in CATEGORIES:
        pool = [s for s in specs if s.category == category]
        step = max(1, len(pool) // per_category)
        chosen += pool[::step][:per_category]
    return chosen


def read_prompts_file(path: str | Path) -> list[SceneSpec]:
    """One grammar prompt per line; blank lines and `#` comments are skipped.

    Raises PromptFileError naming the first bad line and why.
    """
    return parse_prompt_lines(read_text_file(path).splitlines(), str(path))


def parse_prompt_lines(lines: Iterable[str], source: str = "<prompts>") -> list[SceneSpec]:
    specs: list[SceneSpec] = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            specs.append(parse_prompt(text))
        except PromptError as error:
            raise PromptFileError(source, number, f"not a shapes prompt ({error.rule()})") from None
    if not specs:
        raise PromptFileError(source, 0, "no prompts")
    return specs


def write_heldout(path: Path = HELDOUT_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(spec.prompt + "\n" for spec in build_heldout()), encoding="utf-8")


def train_prompts(n: int, seed: int) -> list[SceneSpec]:
    """`n` specs from the training distribution."""
    rng = random.Random(seed)
    return [sample_spec(rng) for _ in range(n)]
