"""Preference labels: stored at once, content-addressed, imported and exported, fitted into a
versioned reward that jobs pin; pairs drawn from models and from a job's sample grids."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from storage.data_dir import DataDir
from storage.db import Database
from storage.labels import NewLabel
from studio.api import BASE, ConfigError, Studio
from studio.labeling import CandidatePair, LabelSource, PairSampler, PairSide
from studio.preference import LabelImportError
from studio.training import build_rewards
from trainer_core.config import TrainConfig, from_dict
from trainer_core.image_grid import save_grid
from trainer_core.preference.artifact import PreferenceReward
from trainer_core.preference.bradley_terry import LinearPreferenceModel
from trainer_core.shapes.prompt_sets import train_prompts
from trainer_core.shapes.tastes import SimulatedLabeller

PROMPTS = tuple(spec.prompt for spec in train_prompts(24, seed=5))


@pytest.fixture
def studio(tmp_path):
    studio = Studio(DataDir(tmp_path / "home"))
    yield studio
    for session_id in list(studio.label_sessions):
        studio.close_labelling(session_id)


def image(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def label_with(studio: Studio, session_id: str, labeller: SimulatedLabeller, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        pair = studio.label_pair(session_id)
        ids.append(studio.label(session_id, labeller.choose(pair.a.image, pair.b.image)))
    return ids


@pytest.mark.slow
@pytest.mark.parametrize("taste", ["warm", "left", "large"])
def test_a_simulated_person_labels_fits_and_trains_on_their_taste(studio, taste):
    """The whole loop through the studio's own API, as the Label tab drives it: label pairs of the base
    model with a hidden taste (10% slips), fit, see the reward listed, submit a job pinned to its version."""
    session_id = studio.start_labelling(LabelSource("seeds", prompts=PROMPTS, seed=1), labeller="sim")
    ids = label_with(studio, session_id, SimulatedLabeller(taste, noise=0.1, seed=0), 60)
    counts = studio.label_counts(session_id)
    assert (counts.session, counts.total) == (60, 60)

    rows = studio.labels.all()
    assert [r.id for r in rows] == ids
    assert all(r.labeller == "sim" and r.session_id == session_id and r.model == "shapes-base" for r in rows)
    assert all(r.seed_a is not None and r.seed_b is not None and r.seed_a != r.seed_b for r in rows)
    assert all(r.checkpoint_a is None and r.checkpoint_b is None for r in rows)
    for row in rows:
        stored = studio.labels.load_image(row.image_a)
        assert stored.shape == (32, 32, 3) and row.prompt in PROMPTS

    card = studio.fit_preference("my-taste", "shapes-stats")
    assert (card.reference, card.n_labels, card.features) == ("pref:my-taste@v1", 60, "shapes-stats")
    assert card.cv_accuracy >= 0.7 and card.labellers == ["sim"]
    assert "pref:my-taste" in studio.rewards()

    # the fitted reward agrees with the hidden taste on pairs nobody labelled
    sampler = PairSampler(studio.jobs, LabelSource("seeds", prompts=PROMPTS, seed=9))
    pairs = [pair for _ in range(10) for pair in sampler.batch()]
    reward = build_rewards(
        from_dict(TrainConfig, {**studio.preset_config(), "rewards": {"weights": {"pref:my-taste": 1.0}}}),
        studio.data_dir,
    ).rewards["pref:my-taste"]
    truth = np.array(
        SimulatedLabeller(taste, noise=0.0).truth(
            np.stack([p.a.image for p in pairs]), np.stack([p.b.image for p in pairs])
        )
    )
    scores_a = reward.score(np.stack([p.a.image for p in pairs]), [p.prompt for p in pairs])
    scores_b = reward.score(np.stack([p.b.image for p in pairs]), [p.prompt for p in pairs])
    decided = truth != "tie"
    assert np.mean((scores_a > scores_b)[decided] == (truth[decided] == "a")) >= 0.8

    config = studio.preset_config()
    config["rewards"]["weights"] = {"geneval": 1.0, "pref:my-taste": 0.5}
    job_id = studio.submit(config)
    assert studio.job_config(job_id)["rewards"]["weights"] == {"geneval": 1.0, "pref:my-taste@v1": 0.5}

    # refitting makes v2; the job keeps v1, and its rewards load v1 exactly
    assert studio.fit_preference("my-taste", "shapes-stats").reference == "pref:my-taste@v2"
    assert studio.job_config(job_id)["rewards"]["weights"]["pref:my-taste@v1"] == 0.5
    mix = build_rewards(from_dict(TrainConfig, studio.job_config(job_id)), studio.data_dir)
    assert mix.rewards["pref:my-taste@v1"].card.version == 1
    later = studio.submit(config)
    assert "pref:my-taste@v2" in studio.job_config(later)["rewards"]["weights"]


def test_unknown_preference_rewards_are_refused_by_field(studio):
    config = studio.preset_config()
    config["rewards"]["weights"] = {"pref:nobody": 1.0}
    with pytest.raises(ConfigError, match=r"rewards\.weights\.pref:nobody: no preference reward 'nobody'"):
        studio.submit(config)
    assert studio.list_jobs() == []


def test_labels_sharing_an_image_store_it_once_and_undo_deletes_only_the_row(studio):
    store = studio.labels
    first, second = store.store_image(image(10)), store.store_image(image(200))
    assert store.store_image(image(10)) == first and first.startswith("labels/images/")
    assert len(list(studio.data_dir.label_images.rglob("*.png"))) == 2
    ids = [store.add(NewLabel("a red circle", first, second, choice, "me")) for choice in ("a", "tie")]
    assert store.count() == 2
    assert store.delete(ids[0]) and store.count() == 1 and studio.data_dir.inside(first).is_file()
    with pytest.raises(ValueError, match="choice: must be a, b or tie"):
        NewLabel("a red circle", first, second, "left", "me")
    with pytest.raises(ValueError, match="is not stored"):
        store.add(NewLabel("p", first, "labels/images/00/missing.png", "a", "me"))


def test_undo_brings_the_pair_back_and_skip_moves_on(studio):
    session_id = studio.start_labelling(LabelSource("seeds", prompts=PROMPTS[:3]))
    first = studio.label_pair(session_id)
    label_id = studio.label(session_id, "a")
    second = studio.label_pair(session_id)
    assert second is not first
    assert studio.undo_label(session_id)
    assert studio.labels.get(label_id) is None and studio.label_counts(session_id).session == 0
    assert studio.label_pair(session_id) is first
    studio.label(session_id, "b")
    assert studio.label_pair(session_id) is second  # the pair that was on screen comes back after it
    studio.skip_pair(session_id)
    assert studio.label_pair(session_id) is not second
    assert studio.labels.all()[0].choice == "b"
    assert not studio.undo_label(session_id) or studio.label_counts(session_id).session == 0


def write_folder(folder: Path, lines: list[dict]) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for value in (10, 90, 200):
        Image.fromarray(image(value)).save(folder / "images" / f"{value}.png")
    (folder / "labels.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def line(**changes) -> dict:
    base = {
        "prompt": "a red circle",
        "image_a": "images/10.png",
        "image_b": "images/90.png",
        "choice": "a",
        "labeller": "ann",
    }
    return base | changes


def test_labels_round_trip_through_a_folder(studio, tmp_path):
    folders = studio.data_dir.label_folders  # the web app's label folders live in the data directory
    write_folder(
        folders / "in",
        [
            line(),
            line(choice="tie", image_b="images/200.png"),
            line(choice="b", labeller="bob", created_at="2026-03-01T10:00:00+00:00", seed_a=3, seed_b=4),
        ],
    )
    result = studio.import_labels("in")
    assert (result.added, result.already_stored) == (3, 0)
    assert len(list(studio.data_dir.label_images.rglob("*.png"))) == 3  # images/10.png once for three labels

    assert studio.export_labels("out") == 3
    exported = [json.loads(x) for x in (folders / "out" / "labels.jsonl").read_text().splitlines()]
    # oldest first: bob's label carries its own (earlier) time
    assert [(e["choice"], e["labeller"]) for e in exported] == [("b", "bob"), ("a", "ann"), ("tie", "ann")]
    assert (exported[0]["seed_a"], exported[0]["created_at"]) == (3, "2026-03-01T10:00:00+00:00")
    for e in exported:
        original = np.asarray(Image.open(folders / "out" / e["image_a"]).convert("RGB"))
        assert original.shape == (8, 8, 3) and (original == 10).all()

    # importing the export into a second studio gives the same labels; importing it again adds nothing
    other = Studio(DataDir(tmp_path / "other"))
    shutil.copytree(folders / "out", other.data_dir.label_folders / "copied")
    assert other.import_labels("copied").added == 3
    again = other.import_labels("copied")
    assert (again.added, again.already_stored) == (0, 3)
    assert studio.import_labels("out").added == 0
    key = [(r.prompt, r.choice, r.labeller) for r in other.labels.all()]
    assert key == [(r.prompt, r.choice, r.labeller) for r in studio.labels.all()]
    with pytest.raises(ValueError, match=r"--out: .* is not empty"):
        studio.export_labels("out")


def test_a_bad_import_names_each_bad_line_and_stores_nothing(studio, tmp_path):
    folder = studio.data_dir.label_folders / "bad"
    write_folder(
        folder,
        [
            line(),
            line(choice="left"),
            line(image_b="images/missing.png"),
            line(prompt=""),
            line(image_a="../secret.png"),
            line(seed_a="three"),
        ],
    )
    with (folder / "labels.jsonl").open("a") as file:
        file.write("{not json\n")
    (folder / "images" / "broken.png").write_bytes(b"not a png")
    with (folder / "labels.jsonl").open("a") as file:
        file.write(json.dumps(line(image_a="images/broken.png")) + "\n")
    with pytest.raises(LabelImportError) as refused:
        studio.import_labels("bad")
    message = str(refused.value)
    path = folder / "labels.jsonl"
    for number, expected in [
        (2, "choice: must be"),
        (3, "image_b: no file 'images/missing.png'"),
        (4, "prompt: must be a non-empty string"),
        (5, "image_a: '../secret.png' leaves"),
        (6, "seed_a: must be an integer"),
        (7, "line: not valid JSON"),
        (8, "image_a: 'images/broken.png' is not a readable image"),
    ]:
        assert f"{path}:{number}: {expected}" in message
    assert f"{path}:1:" not in message
    assert studio.labels.count() == 0 and not list(studio.data_dir.label_images.rglob("*.png"))


def test_fitting_needs_enough_decided_labels(studio, tmp_path):
    write_folder(studio.data_dir.label_folders / "few", [line(), line(choice="b")])
    with pytest.raises(ValueError, match="at least 10 labels that are not ties, there are 2"):
        studio.fit_preference("few", "shapes-stats", "few")
    with pytest.raises(ValueError, match="name: 'Bad Name' is not allowed"):
        studio.fit_preference("Bad Name", "shapes-stats", "few")


def test_label_folders_from_the_web_stay_in_the_data_directory(studio, tmp_path):
    write_folder(tmp_path / "elsewhere", [line()])
    for folder, message in [
        (
            str(tmp_path / "elsewhere"),
            r"folder: absolute paths are not accepted from the web app; name a path inside "
            r"labels/folders/ of the data directory",
        ),
        ("../../elsewhere", r"folder: '\.\.' is not accepted"),
        ("~/elsewhere", "folder: absolute paths"),
    ]:
        with pytest.raises(ValueError, match=message):
            studio.import_labels(folder)
        with pytest.raises(ValueError, match=message):
            studio.export_labels(folder)
        with pytest.raises(ValueError, match=message):
            studio.fit_preference("mine", "shapes-stats", folder)
    with pytest.raises(ValueError, match=r"features: absolute paths .* inside models/"):
        studio.fit_preference("mine", f"clip:{tmp_path}")
    assert studio.labels.count() == 0 and not (tmp_path / "elsewhere" / "x").exists()


def brightness_and_redness(images: np.ndarray, prompts: list[str]) -> np.ndarray:
    pixels = images.reshape(len(images), -1, 3).astype(np.float64)
    return np.stack([pixels.mean(axis=(1, 2)), (pixels[..., 0] - pixels[..., 2]).mean(axis=1)], axis=1)


def side(value: int, red: int = 0) -> PairSide:
    pixels = image(value)
    pixels[..., 0] += red
    pixels[..., 2] -= red
    return PairSide(pixels, value, None, "base model")


def test_uncertain_first_shows_the_pair_whose_label_teaches_the_guide_most(studio):
    # the guide has learnt brightness (weight 0.1, well pinned down) and knows nothing of redness yet
    model = LinearPreferenceModel(np.array([0.1, 0.0]), np.zeros(2), np.ones(2), np.diag([1e-4, 1.0]))
    guide = PreferenceReward("pref:x", model, brightness_and_redness)
    source = LabelSource("seeds", prompts=PROMPTS[:1], order="uncertain", guide="pref:x")
    sampler = PairSampler(studio.jobs, source, guide=guide)
    candidates = [
        CandidatePair("p", side(a, red_a), side(b))
        for a, red_a, b in [(0, 0, 100), (60, 0, 61), (60, 20, 60), (120, 0, 20)]
    ]
    chosen = sampler._choose(candidates)
    assert (chosen.a.seed, chosen.b.seed) == (60, 60)  # same brightness, different redness
    assert chosen.predicted == pytest.approx(0.5)
    with pytest.raises(ValueError, match="guide: uncertain-first needs a fitted preference reward"):
        LabelSource("seeds", prompts=PROMPTS, order="uncertain")


def test_a_job_sample_grid_is_labelled_cell_by_cell(studio, tmp_path):
    config = studio.preset_config()
    job_id = studio.submit(config)
    cells = np.stack([image(v, 32) for v in (10, 20, 30, 40, 50, 60)])
    prompts, seeds = ["a red circle", "two blue squares", "a green triangle"], [0, 1]
    grid = studio.data_dir.run_dir(job_id) / "samples" / "iter_000010.png"
    save_grid(cells, rows=3, out=grid, scale=4, row_labels=prompts)
    studio.jobs.record_samples(job_id, 10, str(grid), prompts, seeds)
    session_id = studio.start_labelling(LabelSource("job-samples", job_id=job_id, iteration=10))
    for _ in range(4):
        pair = studio.label_pair(session_id)
        row = prompts.index(pair.prompt)
        assert (pair.a.image == cells[row * 2 + pair.a.seed]).all()
        assert (pair.b.image == cells[row * 2 + pair.b.seed]).all()
        assert (pair.job_id, pair.iteration, pair.a.origin) == (job_id, 10, f"job {job_id} · iteration 10")
        studio.label(session_id, "tie")
    assert {(r.job_id, r.iteration) for r in studio.labels.all()} == {(job_id, 10)}
    with pytest.raises(Exception, match="no sample grid"):
        studio.start_labelling(LabelSource("job-samples", job_id=job_id, iteration=99))


def test_labels_of_an_older_database_survive_the_migration(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = Database(url)
    database.migrate("0001")
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO preference_labels (prompt, image_a, image_b, choice, labeler, created_at) "
                "VALUES ('a red circle', 'x.png', 'y.png', 'a', 'ann', '2026-01-01 00:00:00')"
            )
        )
    database.migrate()
    with database.engine.begin() as connection:
        row = connection.execute(text("SELECT prompt, choice, seed_a, session_id FROM preference_labels")).one()
    assert tuple(row) == ("a red circle", "a", None, None)


CRASH_SCRIPT = textwrap.dedent("""
    import sys
    from storage.data_dir import DataDir
    from studio.api import Studio
    from studio.labeling import LabelSource
    studio = Studio(DataDir(sys.argv[1]))
    session_id = studio.start_labelling(LabelSource("seeds", prompts=("a red circle", "two green squares")))
    choices = "ab"
    n = 0
    while True:
        pair = studio.label_pair(session_id)
        label_id = studio.label(session_id, choices[n % 2])
        print(label_id, flush=True)  # reported to the person: it must survive
        n += 1
""")


@pytest.mark.slow
def test_every_label_reported_survives_a_kill_mid_session(tmp_path):
    home = tmp_path / "home"
    process = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(home)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    reported = []
    deadline = time.monotonic() + 240
    while len(reported) < 12 and time.monotonic() < deadline:
        output = process.stdout.readline()
        if not output:
            break
        reported.append(int(output))
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(reported) >= 12, "the labelling process stopped before 12 labels"
    studio = Studio(DataDir(home))
    stored = {r.id: r for r in studio.labels.all()}
    assert set(reported) <= set(stored)
    for record in stored.values():  # nothing half-written: every row's images are complete PNGs
        for path in (record.image_a, record.image_b):
            assert studio.labels.load_image(path).shape == (32, 32, 3)


@pytest.mark.slow
def test_one_seed_of_two_models_puts_each_model_on_either_side(studio):
    import torch

    from trainer_core.adapters import load_adapter
    from trainer_core.lora import LoraSpec

    job_id = studio.submit(studio.preset_config())
    adapter = load_adapter("shapes-base")
    adapter.add_lora(LoraSpec(rank=2, alpha=2))
    with torch.no_grad():
        for param in adapter.lora_parameters():
            param.add_(0.5 * torch.randn_like(param))  # a checkpoint that draws visibly different images
    path = studio.data_dir.run_dir(job_id) / "checkpoints" / "iter_000005.safetensors"
    path.parent.mkdir(parents=True)
    adapter.save_lora(path)
    studio.jobs.record_checkpoint(job_id, 5, str(path))
    checkpoint = studio.jobs.checkpoints(job_id)[0].id

    session_id = studio.start_labelling(LabelSource("checkpoints", BASE, str(checkpoint), PROMPTS[:4], seed=2))
    lefts = []
    for _ in range(8):
        pair = studio.label_pair(session_id)
        assert pair.a.seed == pair.b.seed and {pair.a.checkpoint, pair.b.checkpoint} == {None, checkpoint}
        assert {pair.a.origin, pair.b.origin} == {"base model", f"job {job_id} · iteration 5"}
        assert not np.array_equal(pair.a.image, pair.b.image)
        lefts.append(pair.a.checkpoint)
        studio.label(session_id, "a")
    assert set(lefts) == {None, checkpoint}  # the tuned model is not always on one side
    rows = studio.labels.all()
    assert {(r.checkpoint_a, r.checkpoint_b) for r in rows} == {(None, checkpoint), (checkpoint, None)}
    with pytest.raises(ValueError, match="checkpoint_b: pick a different checkpoint"):
        LabelSource("checkpoints", BASE, BASE, PROMPTS)
