"""The `vgrpo` command line, run as a user would run it."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from studio.cli import CliError, main, parse_seeds


def vgrpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_seed_lists():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5") == [5]
    assert parse_seeds("0,2-3,9") == [0, 2, 3, 9]
    with pytest.raises(CliError, match="--seeds"):
        parse_seeds("3-1")
    with pytest.raises(CliError, match="--seeds"):
        parse_seeds("a-b")


def test_eval_reports_the_bad_line_of_a_prompts_file(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\ntwo blue squares\nthree dogs\n")
    code = main(["eval", "--model", "shapes-base", "--prompts-file", str(prompts), "--seeds", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "prompts.txt:3: not a shapes prompt (shape: must be one of" in err and "dogs" not in err


def test_eval_refuses_an_unknown_model(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    assert main(["eval", "--model", "nope", "--prompts-file", str(prompts)]) == 2
    assert "model: 'nope' is not a built-in model" in capsys.readouterr().err


def test_train_refuses_a_negative_time_budget_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "shapes-smoke", "--out", str(out), "--time-budget-minutes", "-1"]) == 2
    assert "time_budget_minutes: must be a non-negative number" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_sample_writes_a_labelled_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = vgrpo(
        "sample",
        "--prompt",
        "a red circle",
        "--prompt",
        "two blue squares",
        "--seeds",
        "0-3",
        "--steps",
        "4",
        "--solver",
        "euler",
        "--scale",
        "2",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    grid = np.asarray(Image.open(out).convert("RGB"))
    # 2 rows x 4 columns of 64 px tiles with 2 px padding, plus a label column.
    assert grid.shape[0] == 2 * 66 + 2
    assert grid.shape[1] > 4 * 66 + 2
    assert "8 images" in result.stdout


@pytest.mark.slow
def test_eval_writes_the_documented_json(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\ntwo green triangles\na red circle left of a blue square\n")
    out = tmp_path / "eval.json"
    result = vgrpo("eval", "--prompts-file", str(prompts), "--seeds", "2", "--steps", "6", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["n_prompts"] == 4 and data["n_images"] == 8
    assert set(data["accuracy"]) == {"overall", "single", "count", "position"}
    assert set(data["reward_mean"]) == {"geneval", "partial", "count", "color", "position"}
    assert all(0 <= v <= 1 for v in data["accuracy"].values())
    per_category = [data["accuracy"][c] for c in ("single", "count", "position")]
    assert data["accuracy"]["overall"] == pytest.approx(sum(per_category) / 3)
    assert "overall" in result.stdout


@pytest.mark.slow
def test_label_fit_list_export_import_from_the_command_line(tmp_path):
    home = str(tmp_path / "home")
    # a person at the terminal: a choice per line, an unknown key, an undo and a quit
    typed = "1\n2\nx\n3\nu\n3\n1\nq\n"
    labelled = subprocess.run(
        [sys.executable, "-m", "studio.cli", "label", "--data-dir", home, "--count", "10"],
        input=typed,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert labelled.returncode == 0, labelled.stderr
    assert "not understood: 'x'" in labelled.stdout and "undone" in labelled.stdout
    assert "4 labels stored in this session, 4 in all" in labelled.stdout

    simulated = vgrpo("label", "--data-dir", home, "--simulated-taste", "large", "--count", "30", "--seed", "1")
    assert simulated.returncode == 0, simulated.stderr
    assert "30 labels stored in this session, 34 in all" in simulated.stdout

    fitted = vgrpo("reward", "fit", "--data-dir", home, "--features", "shapes-stats", "--out", "big-things")
    assert fitted.returncode == 0, fitted.stderr
    assert "pref:big-things@v1 · shapes-stats · 34 labels" in fitted.stdout
    listed = vgrpo("reward", "list", "--data-dir", home)
    assert "pref:big-things@v1" in listed.stdout

    exported = vgrpo("labels", "export", "--data-dir", home, "--out", str(tmp_path / "shared"))
    assert "exported 34 labels" in exported.stdout
    imported = vgrpo("labels", "import", "--data-dir", str(tmp_path / "other"), str(tmp_path / "shared"))
    assert "imported 34 labels (0 already stored)" in imported.stdout
    refit = vgrpo("reward", "fit", "--data-dir", home, "--labels", str(tmp_path / "shared"), "--out", "big-things")
    assert "pref:big-things@v2" in refit.stdout

    bad = vgrpo("reward", "fit", "--data-dir", home, "--features", "sift", "--out", "x")
    assert bad.returncode == 2 and "features: unknown 'sift'" in bad.stderr
    unknown = vgrpo("label", "--data-dir", home, "--simulated-taste", "blue", "--count", "1")
    assert unknown.returncode == 2 and "taste: unknown 'blue'" in unknown.stderr


def test_bad_input_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import studio.cli as cli

    def bad_input(args):
        raise ValueError("--names: unknown 'hps'; allowed: ...")

    def bug(args):
        raise ValueError("operands could not be broadcast together with shapes (3,) (4,)")

    monkeypatch.setitem(cli.COMMANDS, "export", bad_input)
    assert cli.main(["export", "--lora", "x.safetensors", "--format", "kohya", "--out", "y.safetensors"]) == 2
    assert "vgrpo export: error: --names: unknown 'hps'" in capsys.readouterr().err
    monkeypatch.setitem(cli.COMMANDS, "export", bug)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["export", "--lora", "x.safetensors", "--format", "kohya", "--out", "y.safetensors"])


def test_building_the_parser_imports_no_torch():
    code = "import sys, studio.cli; studio.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_pretrain_shapes_builds_the_architecture_and_noise_levels_it_is_asked_for(tmp_path):
    out = tmp_path / "base"
    main(
        [
            "pretrain-shapes",
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--pooled-modulation",
            "--coordinate-channels",
            "--time-shift",
            "3",
        ]
    )
    unet = json.loads((out / "unet" / "config.json").read_text())
    assert (unet["in_channels"], unet["class_embed_type"], unet["resnet_time_scale_shift"]) == (
        5,
        "projection",
        "scale_shift",
    )
    assert "time_shift=3.0 pooled_modulation=True coordinate_channels=True" in (out / "PRETRAIN.txt").read_text()
