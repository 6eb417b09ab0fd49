from collections import Counter

import pytest

from trainer_core.shapes.grammar import CATEGORIES, UNSEEN_COMBOS
from trainer_core.shapes.prompt_sets import (
    HELDOUT_PATH,
    PromptFileError,
    build_heldout,
    load_heldout,
    parse_prompt_lines,
    read_prompts_file,
)


def test_committed_heldout_file_is_the_generated_set():
    assert [s.prompt for s in load_heldout()] == [s.prompt for s in build_heldout()]


def test_heldout_is_large_balanced_and_unique():
    specs = load_heldout()
    assert len(specs) >= 300
    assert len({s.prompt for s in specs}) == len(specs)
    sizes = Counter(s.category for s in specs)
    assert set(sizes) == set(CATEGORIES)
    assert sizes["single"] == 21  # every single-object prompt the grammar has
    assert all(60 <= sizes[c] <= 80 for c in CATEGORIES if c != "single")


def test_heldout_holds_combinations_never_trained_on():
    specs = load_heldout()
    unseen = [s for s in specs if s.combos & UNSEEN_COMBOS]
    assert {c for s in unseen for c in s.combos} >= UNSEEN_COMBOS
    assert Counter(s.category for s in unseen)["position"] >= 10


def test_bad_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\n# a comment\ntwo green squares\na purple hexagon\n")
    with pytest.raises(PromptFileError, match=r"prompts.txt:5: 'a purple hexagon' is not a shapes prompt: shape"):
        read_prompts_file(path)


def test_comments_and_blank_lines_are_skipped():
    specs = parse_prompt_lines(["a red circle  # first", "", "   ", "three squares"])
    assert [s.prompt for s in specs] == ["a red circle", "three squares"]
    with pytest.raises(PromptFileError, match="no prompts"):
        parse_prompt_lines(["# nothing"])


def test_heldout_path_is_packaged():
    assert HELDOUT_PATH.is_file() and HELDOUT_PATH.parent.name == "prompt_sets"
