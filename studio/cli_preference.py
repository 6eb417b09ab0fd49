"""`vgrpo label`, `vgrpo labels import|export|list` and `vgrpo reward fit|list`: preference labels and
the rewards fitted on them, from the command line.

vgrpo label --prompt-set "train: 64 random prompts" --count 50           # choices typed on stdin
vgrpo label --job 3 --source job-samples --simulated-taste warm --count 200
vgrpo labels export --out my-labels/ ; vgrpo labels import my-labels/
vgrpo reward fit --labels db --features shapes-stats --out my-taste     # then pref:my-taste in a mix
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from studio.api import Studio

#: what a person types at `vgrpo label` -> the action
KEYS = {
    "1": "a",
    "a": "a",
    "2": "b",
    "b": "b",
    "3": "tie",
    "t": "tie",
    "tie": "tie",
    "s": "skip",
    "": "skip",
    "u": "undo",
    "q": "quit",
}


def add_commands(commands: argparse._SubParsersAction, storage_args) -> None:
    label = commands.add_parser("label", help="label pairs of images (stdin, or a simulated labeller)")
    storage_args(label)
    label.add_argument("--source", default="seeds", help="seeds | checkpoints | job-samples (seeds)")
    label.add_argument("--checkpoint-a", default="base", help="base or a checkpoint id (base)")
    label.add_argument("--checkpoint-b", default="base", help="the other checkpoint, for --source checkpoints")
    prompts = label.add_mutually_exclusive_group()
    prompts.add_argument("--prompts-file", type=Path, help="one prompt per line")
    prompts.add_argument("--prompt-set", default="train: 64 random prompts", help="a named prompt set")
    label.add_argument("--job", type=int, help="the job whose prompts (or, with --source job-samples, grids) to use")
    label.add_argument("--iteration", type=int, help="only this iteration's sample grid (job-samples)")
    label.add_argument("--order", default="random", help="random | uncertain (random)")
    label.add_argument("--guide", help="the preference reward that orders pairs uncertain first (pref:NAME)")
    label.add_argument("--count", type=int, default=20, help="labels to give (20)")
    label.add_argument("--labeller", default="local")
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--simulated-taste", help="label as a simulated person with this taste (left, large, warm)")
    label.add_argument("--noise", type=float, default=0.1, help="the simulated person's share of slips (0.1)")

    labels = commands.add_parser("labels", help="preference labels: import, export, list")
    label_commands = labels.add_subparsers(dest="labels_command", required=True)
    importing = label_commands.add_parser("import", help="store the labels of a folder (labels.jsonl + images)")
    storage_args(importing)
    importing.add_argument("directory", type=Path)
    exporting = label_commands.add_parser("export", help="write every label to a new folder")
    storage_args(exporting)
    exporting.add_argument("--out", type=Path, required=True)
    listing = label_commands.add_parser("list", help="how many labels, by labeller and choice")
    storage_args(listing)

    reward = commands.add_parser("reward", help="preference rewards: fit, list")
    reward_commands = reward.add_subparsers(dest="reward_command", required=True)
    fit = reward_commands.add_parser("fit", help="fit a Bradley-Terry reward on labels; stores a new version")
    storage_args(fit)
    fit.add_argument("--labels", default="db", help="db (every stored label) or a labels folder (db)")
    fit.add_argument("--features", default="shapes-stats", help="shapes-stats | clip:DIR (shapes-stats)")
    fit.add_argument("--out", required=True, help="the reward's name: pref:NAME in a reward mix")
    rewards = reward_commands.add_parser("list", help="every fitted preference reward, latest version")
    storage_args(rewards)


def _studio(args: argparse.Namespace) -> Studio:
    from storage.data_dir import DataDir
    from studio.api import Studio

    return Studio(DataDir(args.data_dir), args.db_url, confine_paths=False)  # the owner names any path


def cmd_label(args: argparse.Namespace) -> None:
    from studio.labeling import LabelSource

    studio = _studio(args)
    if args.prompts_file is not None:
        typed = args.prompts_file.read_text(encoding="utf-8")
        prompts = studio.label_prompts(typed=typed)
    elif args.source != "job-samples":
        prompts = studio.label_prompts(args.prompt_set, job_id=args.job)
    else:
        prompts = []
    source = LabelSource(
        args.source,
        args.checkpoint_a,
        args.checkpoint_b,
        tuple(prompts),
        args.job,
        args.iteration,
        args.order,
        args.guide,
        args.seed,
    )
    if args.count < 1:
        raise ValueError(f"--count: must be at least 1, got {args.count}")
    session_id = studio.start_labelling(source, args.labeller)
    try:
        if args.simulated_taste:
            _label_simulated(studio, session_id, args)
        else:
            _label_interactively(studio, session_id, args.count)
    finally:
        counts = studio.label_counts(session_id)
        studio.close_labelling(session_id)
    print(f"{counts.session} labels stored in this session, {counts.total} in all")


def _label_simulated(studio: Studio, session_id: str, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from trainer_core.shapes.tastes import SimulatedLabeller

    labeller = SimulatedLabeller(args.simulated_taste, args.noise, args.seed)
    for _ in tqdm(range(args.count), desc="label", unit="pair"):
        pair = studio.label_pair(session_id)
        studio.label(session_id, labeller.choose(pair.a.image, pair.b.image))


def _label_interactively(studio: Studio, session_id: str, count: int) -> None:
    from PIL import Image

    view = Path(tempfile.gettempdir()) / f"vgrpo-label-{session_id[:8]}.png"
    print("for each pair: 1 = left better, 2 = right better, 3 = tie, s = skip, u = undo, q = quit")
    given = 0
    while given < count:
        pair = studio.label_pair(session_id)
        side_by_side = np.concatenate([pair.a.image, np.full_like(pair.a.image[:, :4], 255), pair.b.image], axis=1)
        scale = max(1, 256 // side_by_side.shape[0])
        Image.fromarray(side_by_side).resize(
            (side_by_side.shape[1] * scale, side_by_side.shape[0] * scale), Image.NEAREST
        ).save(view)
        print(f"[{given + 1}/{count}] {pair.prompt!r}  (left: {pair.a.origin}, right: {pair.b.origin}; see {view})")
        line = sys.stdin.readline()
        if not line:
            return
        action = KEYS.get(line.strip().lower())
        if action is None:
            print(f"  not understood: {line.strip()!r}; type 1, 2, 3, s, u or q")
        elif action == "quit":
            return
        elif action == "skip":
            studio.skip_pair(session_id)
        elif action == "undo":
            print("  undone" if studio.undo_label(session_id) else "  nothing to undo")
            given = max(0, given - 1)
        else:
            studio.label(session_id, action)
            given += 1


def cmd_labels(args: argparse.Namespace) -> None:
    from collections import Counter

    studio = _studio(args)
    if args.labels_command == "import":
        result = studio.import_labels(str(args.directory))
        print(f"imported {result.added} labels ({result.already_stored} already stored)")
    elif args.labels_command == "export":
        print(f"exported {studio.export_labels(str(args.out))} labels to {args.out}")
    else:
        records = studio.labels.all()
        by = Counter((r.labeller, r.choice) for r in records)
        print(f"{len(records)} labels")
        for (labeller, choice), count in sorted(by.items()):
            print(f"  {labeller:20} {choice:4} {count}")


def cmd_reward(args: argparse.Namespace) -> None:
    studio = _studio(args)
    if args.reward_command == "fit":
        labels_dir = None if args.labels == "db" else args.labels
        card = studio.fit_preference(args.out, args.features, labels_dir)
        print(card.summary())
        print(f"fitted in {card.fit_seconds:.1f} s; use it as {card.reference} (or pref:{card.name}, the latest)")
    else:
        names = studio.preference_rewards()
        if not names:
            print("no preference rewards yet: vgrpo reward fit --out NAME")
        for name in names:
            print(studio.preference_card(name).summary())
