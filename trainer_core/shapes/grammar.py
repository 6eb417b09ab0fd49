"""The prompt grammar of the shapes world: scene specs and their text, both ways.

A scene is one or two *object groups* ("two red circles"), optionally tied by a
pairwise relation ("... left of a blue square"). At most four objects in all.

    prompt   := group | group " and " group | group " " relation " " group
    group    := count [colour] shape          ("a" / "an" for one, plural noun for more)
    relation := "left of" | "right of" | "above" | "below"

Colour is optional only in single-group prompts; two groups must differ in
colour or shape so that every object in an image belongs to at most one group.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
MAX_OBJECTS = 4
CATEGORIES: tuple[str, ...] = ("single", "colors", "count", "two_objects", "position")

NUMBER_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three", 4: "four"}
_WORD_NUMBERS: dict[str, int] = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_PLURALS: dict[str, str] = {shape: shape + "s" for shape in SHAPES}
_SINGULARS: dict[str, str] = {**{s: s for s in SHAPES}, **{p: s for s, p in _PLURALS.items()}}

# (count, colour, shape) combinations that never appear in pretraining or RL
# training prompts; the held-out set uses them to measure compositional
# generalisation.
UNSEEN_COMBOS: frozenset[tuple[int, str, str]] = frozenset(
    {(2, "purple", "triangle"), (3, "yellow", "circle"), (4, "blue", "square"), (2, "green", "circle")}
)


class PromptError(ValueError):
    """A prompt that is not a sentence of the shapes grammar."""

    def rule(self) -> str:
        """The rule the prompt broke, without the prompt's own words (what a file's error may show)."""
        head = re.split(r",? got | (?:from|in) ['\"]", str(self), maxsplit=1)[0]
        return re.sub(r"'[^']*'|\"[^\"]*\"", "...", head)  # a word of the prompt quoted in the middle


@dataclass(frozen=True)
class ObjectGroup:
    """`count` objects of one `shape`, all of `color` (None: any colour)."""

    count: int
    shape: str
    color: str | None = None

    def __post_init__(self) -> None:
        if self.count not in NUMBER_WORDS:
            raise PromptError(f"count: must be 1-{MAX_OBJECTS}, got {self.count}")
        if self.shape not in SHAPES:
            raise PromptError(f"shape: must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if self.color is not None and self.color not in COLORS:
            raise PromptError(f"color: must be one of {', '.join(COLORS)}, got {self.color!r}")

    @property
    def text(self) -> str:
        noun = self.shape if self.count == 1 else _PLURALS[self.shape]
        words = [NUMBER_WORDS[self.count], self.color, noun]
        if self.count == 1 and (self.color or self.shape)[0] in "aeiou":
            words[0] = "an"
        return " ".join(w for w in words if w)

    def matches(self, shape: str, color: str) -> bool:
        return shape == self.shape and (self.color is None or color == self.color)


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt asks for: one or two groups and an optional relation.

    `relation` reads `groups[0] <relation> groups[1]`, e.g. "left of".
    """

    groups: tuple[ObjectGroup, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.groups) <= 2:
            raise PromptError(f"groups: a prompt names 1 or 2 object groups, got {len(self.groups)}")
        if self.n_objects > MAX_OBJECTS:
            raise PromptError(f"count: at most {MAX_OBJECTS} objects per prompt, got {self.n_objects}")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise PromptError(f"relation: must be one of {', '.join(RELATIONS)}, got {self.relation!r}")
            if len(self.groups) != 2:
                raise PromptError("relation: needs exactly two object groups")
        if len(self.groups) == 2:
            a, b = self.groups
            if a.color is None or b.color is None:
                raise PromptError("color: each group of a two-group prompt needs a colour")
            if (a.shape, a.color) == (b.shape, b.color):
                raise PromptError("groups: the two groups must differ in colour or shape")

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def prompt(self) -> str:
        if len(self.groups) == 1:
            return self.groups[0].text
        joiner = f" {self.relation} " if self.relation else " and "
        return joiner.join(g.text for g in self.groups)

    @property
    def category(self) -> str:
        """The held-out category this spec belongs to (see module docstring of prompt_sets)."""
        if len(self.groups) == 1:
            return "single" if self.groups[0].count == 1 else "count"
        if self.relation is not None:
            return "position"
        if all(g.count == 1 for g in self.groups):
            return "colors"
        return "two_objects"

    @property
    def combos(self) -> set[tuple[int, str | None, str]]:
        return {(g.count, g.color, g.shape) for g in self.groups}


def _parse_group(words: list[str], prompt: str) -> ObjectGroup:
    if not 2 <= len(words) <= 3:
        raise PromptError(f"cannot read an object group from {' '.join(words)!r} in {prompt!r}")
    count_word, *rest = words
    if count_word not in _WORD_NUMBERS:
        raise PromptError(f"count: expected one of a, an, one, two, three, four, got {count_word!r} in {prompt!r}")
    count = _WORD_NUMBERS[count_word]
    color = rest[0] if len(rest) == 2 else None
    noun = rest[-1]
    if color is not None and color not in COLORS:
        raise PromptError(f"color: must be one of {', '.join(COLORS)}, got {color!r} in {prompt!r}")
    if noun not in _SINGULARS:
        raise PromptError(f"shape: must be one of {', '.join(SHAPES)}, got {noun!r} in {prompt!r}")
    plural = noun != _SINGULARS[noun]
    if plural != (count > 1):
        raise PromptError(f"shape: {noun!r} does not agree with count {count_word!r} in {prompt!r}")
    return ObjectGroup(count=count, shape=_SINGULARS[noun], color=color)


def parse_prompt(prompt: str) -> SceneSpec:
    """Read a prompt of the grammar into its spec; raise PromptError otherwise.

    Case, surrounding spaces, a final period and "to the left of" are tolerated.
    """
    text = " ".join(prompt.strip().lower().rstrip(".").split())
    text = text.replace("to the left of", "left of").replace("to the right of", "right of")
    if not text:
        raise PromptError("prompt: empty")
    words = text.split(" ")
    for i in range(len(words)):
        for relation in RELATIONS:
            rel_words = relation.split(" ")
            if words[i : i + len(rel_words)] == rel_words and i > 0:
                left, right = words[:i], words[i + len(rel_words) :]
                return SceneSpec((_parse_group(left, prompt), _parse_group(right, prompt)), relation)
    if "and" in words:
        i = words.index("and")
        return SceneSpec((_parse_group(words[:i], prompt), _parse_group(words[i + 1 :], prompt)))
    return SceneSpec((_parse_group(words, prompt),))


def sample_spec(rng: random.Random, category: str | None = None, allow_unseen: bool = False) -> SceneSpec:
    """Draw a spec from the training distribution (uniform over categories).

    Training never sees UNSEEN_COMBOS unless `allow_unseen` (used to build the
    held-out set).
    """
    category = category or rng.choice(CATEGORIES)
    while True:
        spec = _draw(rng, category)
        if allow_unseen or not (spec.combos & UNSEEN_COMBOS):
            return spec


def _draw(rng: random.Random, category: str) -> SceneSpec:
    def group(count: int, need_color: bool) -> ObjectGroup:
        color = rng.choice(COLORS) if need_color or rng.random() < 0.75 else None
        return ObjectGroup(count, rng.choice(SHAPES), color)

    if category == "single":
        return SceneSpec((group(1, False),))
    if category == "count":
        return SceneSpec((group(rng.randint(2, MAX_OBJECTS), False),))
    while True:
        if category == "colors":
            counts = (1, 1)
        elif category in ("two_objects", "position"):
            total = rng.randint(2 if category == "position" else 3, MAX_OBJECTS)
            first = rng.randint(1, total - 1)
            counts = (first, total - first)
        else:
            raise PromptError(f"category: must be one of {', '.join(CATEGORIES)}, got {category!r}")
        relation = rng.choice(RELATIONS) if category == "position" else None
        try:
            return SceneSpec((group(counts[0], True), group(counts[1], True)), relation)
        except PromptError:
            continue  # two identical groups: draw again


def vocabulary() -> list[str]:
    """Every word the grammar can produce, for the tokenizer."""
    words = {"a", "an", "one", "and", "of", "left", "right", "above", "below", "to", "the"}
    words |= {w for w in NUMBER_WORDS.values()} | set(COLORS) | set(SHAPES) | set(_PLURALS.values())
    return sorted(words)


OPPOSITE_RELATIONS: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def counterfactual_spec(rng: random.Random, spec: SceneSpec) -> SceneSpec:
    """A training spec of the same category that differs from `spec` in exactly what the category tests.

    single: another colour or shape; colors: the two colours swapped (or, when a swap would describe
    the same scene, the first object in a third colour); count: another count; two_objects: another
    split of the objects between the groups; position: the opposite relation. No image is right for
    both, so rendered from the same noise the two isolate what the prompt must control.
    """
    for _ in range(100):
        candidate = _counterfactual_draw(rng, spec)
        if candidate is not None and candidate != spec and not candidate.combos & UNSEEN_COMBOS:
            return candidate
    raise PromptError(f"no counterfactual of {spec.prompt!r} in the training distribution")


def _counterfactual_draw(rng: random.Random, spec: SceneSpec) -> SceneSpec | None:
    groups, category = spec.groups, spec.category
    try:
        if category == "single":
            (group,) = groups
            # an uncoloured original changes shape: "a circle" vs "a red circle" would share right images
            if group.color is None or rng.random() < 0.5:
                return SceneSpec((ObjectGroup(1, rng.choice(SHAPES), group.color),))
            return SceneSpec((ObjectGroup(1, group.shape, rng.choice(COLORS)),))
        if category == "count":
            (group,) = groups
            return SceneSpec((ObjectGroup(rng.randint(2, MAX_OBJECTS), group.shape, group.color),))
        a, b = groups
        if category == "colors":
            if a.color != b.color and a.shape != b.shape:
                return SceneSpec((ObjectGroup(1, a.shape, b.color), ObjectGroup(1, b.shape, a.color)))
            # a swap would describe the same scene: give the first object a third colour
            return SceneSpec(
                (ObjectGroup(1, a.shape, rng.choice([c for c in COLORS if c not in (a.color, b.color)])), b)
            )
        if category == "two_objects":
            total = rng.randint(3, MAX_OBJECTS)
            first = rng.randint(1, total - 1)
            return SceneSpec((ObjectGroup(first, a.shape, a.color), ObjectGroup(total - first, b.shape, b.color)))
        if category == "position":
            return SceneSpec(groups, OPPOSITE_RELATIONS[spec.relation or ""])
    except PromptError:
        return None
    raise PromptError(f"category: must be one of {', '.join(CATEGORIES)}, got {category!r}")
