import contextlib
from collections import Counter

import pytest

from trainer_core.prompt_source import PromptSource
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
    with pytest.raises(PromptFileError, match=r"prompts.txt:5: not a shapes prompt \(shape: must be one of ") as error:
        read_prompts_file(path)
    assert "hexagon" not in str(error.value) and "purple" not in str(error.value)  # the file's words stay in it


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a\xffb", r"p.txt: not UTF-8 text \(byte 0xff at offset 1\)$"),
        (
            b"a red circle\nroot:x:0:0:root:/root:/bin/bash\n",
            r"p.txt:2: not a shapes prompt \(cannot read an object group\)$",
        ),
        (b"three red circles left of\n", r"p.txt:1: not a shapes prompt \(\w+"),
    ],
)
def test_unreadable_prompts_files_name_file_and_line_never_their_content(tmp_path, content, message):
    path = tmp_path / "p.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_prompts_file(path)
    reason = str(error.value).split("p.txt", 1)[1]
    assert "root" not in reason and "circles" not in reason
    with pytest.raises(ValueError, match=r"p.txt: not UTF-8") if b"\xff" in content else contextlib.nullcontext():
        PromptSource(str(path), seed=0)


def test_comments_and_blank_lines_are_skipped():
    specs = parse_prompt_lines(["a red circle  # first", "", "   ", "three squares"])
    assert [s.prompt for s in specs] == ["a red circle", "three squares"]
    with pytest.raises(PromptFileError, match="no prompts"):
        parse_prompt_lines(["# nothing"])


def test_heldout_path_is_packaged():
    assert HELDOUT_PATH.is_file() and HELDOUT_PATH.parent.name == "prompt_sets"
