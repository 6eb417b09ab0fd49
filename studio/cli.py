"""`vgrpo`: the command line of V-GRPO Studio.

vgrpo sample --model shapes-base --prompt "two red circles" --seeds 0-7 --out grid.png
vgrpo eval --model shapes-base (--prompt-set heldout | --prompts-file FILE) --seeds 4 --out eval.json
vgrpo pretrain-shapes --out DIR [--steps N]
vgrpo export --lora FILE --format kohya|diffusers [--base MODEL] --out FILE.safetensors
vgrpo label ... | labels import DIR | labels export --out DIR | reward fit --out NAME   (preference rewards)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from studio.logs import quiet_libraries

if TYPE_CHECKING:
    from studio.jobs import JobService, JobView

# Nothing is ever fetched from a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def parse_seeds(text: str) -> list[int]:
    """'0-7', '3', '0,2,5' or '0-3,8' to a list of seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise CliError(f"--seeds: expected a list like 0-7 or 0,3,5, got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise CliError(f"--seeds: seeds must be non-negative, got {text!r}")
    return seeds


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-base", help="built-in name or local diffusers directory")
    parser.add_argument("--lora", type=Path, help="LoRA adapter (.safetensors) to apply to the denoiser")
    parser.add_argument("--steps", type=int, default=12, help="ODE solver steps (default 12)")
    parser.add_argument("--solver", default="heun", help="euler | heun | dpmpp_2m (default heun)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda[:N]")


def _device(name: str) -> str:
    """--device auto resolved at run time (torch is not imported to build the parser)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


#: the methods `bench speed` and `bench tune` run unless told otherwise
BENCH_METHODS = "vgrpo,flow-grpo,mix-grpo,diffusion-nft"


def _add_method_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """What the benchmarks that train every method from its preset share: evaluation, model, device."""
    parser.add_argument("--eval-per-category", type=int, default=20, help="held-out prompts per category")
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--model", help="override the presets' base model (e.g. a tiny test model)")
    parser.add_argument("--device", default="auto")


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="METHOD=FILE.yaml",
        help="train METHOD from this YAML config instead of its preset (repeatable)",
    )


def _config_files(items: list[str]) -> dict[str, Path]:
    """--config METHOD=FILE.yaml items as method -> file."""
    files: dict[str, Path] = {}
    for item in items:
        method, sep, file = item.partition("=")
        if not sep or not file:
            raise CliError(f"--config: expected METHOD=FILE.yaml, got {item!r}")
        files[method.strip()] = Path(file)
    return files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgrpo", description="V-GRPO Studio command line")
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="draw a grid of images (rows: prompts, columns: seeds)")
    _sampling_args(sample)
    sample.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for more rows")
    sample.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7 or 0,3,5 (default 0-7)")
    sample.add_argument("--scale", type=int, default=4, help="upscale factor of the saved grid (default 4)")
    sample.add_argument("--out", type=Path, default=Path("grid.png"))

    evaluate = commands.add_parser("eval", help="GenEval-style accuracy on a prompt set")
    _sampling_args(evaluate)
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt-set", choices=["heldout"], help="a built-in prompt set")
    source.add_argument("--prompts-file", type=Path, help="one grammar prompt per line")
    evaluate.add_argument("--seeds", type=int, default=4, help="seeds per prompt: 0..N-1 (default 4)")
    evaluate.add_argument("--out", type=Path, help="write the result as JSON here")

    pretrain = commands.add_parser("pretrain-shapes", help="train the built-in shapes base model from scratch")
    pretrain.add_argument("--out", type=Path, required=True, help="pipeline directory to write")
    pretrain.add_argument("--steps", type=int, help="optimiser steps (default from PretrainConfig)")
    pretrain.add_argument("--batch-size", type=int)
    pretrain.add_argument("--seed", type=int)
    pretrain.add_argument("--snapshot-every", type=int, help="also save step_N/ snapshots")
    pretrain.add_argument(
        "--freeze-text-encoder",
        action="store_false",
        dest="train_text_encoder",
        default=None,
        help="keep the text encoder at its random initialisation",
    )
    pretrain.add_argument("--parse-weight", type=float, help="weight of the text encoder's prompt-parsing objective")
    pretrain.add_argument(
        "--relation-caption-accuracy", type=float, help="share of relation captions that name the drawn relation"
    )
    pretrain.add_argument("--time-shift", type=float, help="shift of the training noise levels toward high noise")
    pretrain.add_argument(
        "--pooled-modulation", action="store_true", help="the pooled prompt modulates every ResNet (adaLN-like)"
    )
    pretrain.add_argument("--coordinate-channels", action="store_true", help="x, y planes as extra UNet inputs")
    train = commands.add_parser("train", help="train a LoRA with V-GRPO")
    config_source = train.add_mutually_exclusive_group()
    config_source.add_argument("--config", type=Path, help="a YAML training config")
    config_source.add_argument("--preset", help="a built-in preset, e.g. shapes-smoke, shapes-geneval, shapes-compress")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    train.add_argument("--data-dir", help="where pref:NAME rewards are found (env VGRPO_HOME, default ./studio_data)")
    train.add_argument("--iterations", type=int, help="override the config's iterations")
    train.add_argument(
        "--devices", type=int, help="override resources.devices: data-parallel processes (GPUs, or CPU processes)"
    )
    train.add_argument(
        "--time-budget-minutes", type=float, help="override the config's time_budget_minutes (0: no limit)"
    )

    bench = commands.add_parser("bench", help="benchmarks (JSON plus a printed table)")
    benches = bench.add_subparsers(dest="bench", required=True)
    sampling = benches.add_parser("sampling", help="images per second of deterministic ODE sampling")
    sampling.add_argument("--model", default="shapes-base")
    sampling.add_argument("--batch-size", type=int, default=64)
    sampling.add_argument("--steps", type=int, default=12)
    sampling.add_argument("--solvers", default="euler,heun,dpmpp_2m", help="comma-separated solver names")
    sampling.add_argument("--repeats", type=int, default=3)
    sampling.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu or cuda[:N]")
    sampling.add_argument("--out", type=Path, default=Path("out/bench/sampling.json"))

    speed = benches.add_parser("speed", help="every method under one wall-clock budget: accuracy vs time")
    speed.add_argument("--budget-minutes", type=float, required=True, help="training time per method and seed")
    speed.add_argument("--seeds", type=int, default=2, help="training seeds per method: 0..N-1")
    speed.add_argument("--methods", default=BENCH_METHODS, help="comma-separated; must include flow-grpo")
    speed.add_argument("--marks", type=int, default=6, help="LoRA snapshots per run, evenly spaced in training time")
    _add_method_bench_arguments(speed)
    _add_config_argument(speed)
    speed.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for speed.json, the plot and speed.md; speed.progress.json there holds the runs finished "
        "so far, and rerunning the same command resumes from it",
    )

    tune = benches.add_parser("tune", help="every method's learning rate x two knobs, by one rule and one budget")
    tune.add_argument("--budget-minutes", type=float, required=True, help="training time per probe and seed")
    tune.add_argument("--seeds", type=int, default=1, help="training seeds per probe: 0..N-1")
    tune.add_argument("--methods", default=BENCH_METHODS, help="comma-separated")
    tune.add_argument("--lr-schedule", default="constant", help="the one schedule every method trains with")
    _add_method_bench_arguments(tune)
    tune.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for tuning.json, tuning.md and METHOD.yaml; tuning.progress.json there holds the probes "
        "finished so far, and rerunning the same command resumes from it",
    )

    fixes = benches.add_parser(
        "fixes", help="each fix to the MDP baselines alone: the share of their change it explains"
    )
    fixes.add_argument("--budget-minutes", type=float, required=True, help="training time per variant and seed")
    fixes.add_argument("--seeds", type=int, default=1, help="training seeds per variant: 0..N-1")
    fixes.add_argument("--methods", default="flow-grpo,mix-grpo", help="comma-separated")
    fixes.add_argument("--marks", type=int, default=6, help="LoRA snapshots per run, evenly spaced in training time")
    _add_method_bench_arguments(fixes)
    _add_config_argument(fixes)
    fixes.add_argument(
        "--out",
        type=Path,
        required=True,
        help="directory for fixes.json and fixes.md; fixes.progress.json there holds the runs finished so far, "
        "and rerunning the same command resumes from it",
    )

    ablation = benches.add_parser("ablation", help="V-GRPO's knobs one at a time: accuracy and surrogate CV")
    ablation.add_argument("--iterations", type=int, default=60, help="training iterations per variant")
    ablation.add_argument("--variants", help="comma-separated variant names (default: all)")
    ablation.add_argument("--seed", type=int, default=0)
    ablation.add_argument("--eval-per-category", type=int, default=20, help="held-out prompts per category")
    ablation.add_argument("--eval-seeds", type=int, default=2)
    ablation.add_argument("--out", type=Path, default=Path("out/bench/ablation.json"))

    throughput = benches.add_parser("throughput", help="one iteration's time split, images/s, peak memory")
    throughput_source = throughput.add_mutually_exclusive_group()
    throughput_source.add_argument("--config", type=Path, help="a YAML training config")
    throughput_source.add_argument("--preset", default="shapes-geneval", help="a built-in preset (shapes-geneval)")
    throughput_source.add_argument(
        "--model-config", help="a real architecture (sd15, sdxl, sd3.5-medium, flux-dev); needs --random-weights"
    )
    throughput.add_argument(
        "--random-weights", action="store_true", help="build --model-config with random weights (nothing downloaded)"
    )
    throughput.add_argument("--resolution", type=int, default=512, help="image side with --model-config (512)")
    throughput.add_argument("--prompts-per-iteration", type=int, default=1, help="with --model-config (1)")
    throughput.add_argument("--group-size", type=int, default=2, help="images per prompt with --model-config (2)")
    throughput.add_argument("--steps", type=int, help="sampling steps with --model-config (the family's default)")
    throughput.add_argument("--no-t5", action="store_true", help="leave T5-XXL out (SD3, FLUX), as they allow")
    throughput.add_argument("--iterations", type=int, default=3, help="timed iterations after one warm-up")
    throughput.add_argument("--device", default="auto")
    throughput.add_argument("--out", type=Path, default=Path("out/bench/throughput.json"))

    reward_bench = benches.add_parser("rewards", help="seconds per image of each reward's scoring")
    reward_bench.add_argument("--names", help="comma-separated rewards (default: every reward that can load)")
    reward_bench.add_argument("--models-dir", type=Path, help="where rewards/NAME are (default: the data directory's)")
    reward_bench.add_argument("--random-weights", action="store_true", help="real-size CLIPs with random weights")
    reward_bench.add_argument("--images", type=int, default=16, help="images per batch (16)")
    reward_bench.add_argument("--resolution", type=int, default=512, help="image side (512)")
    reward_bench.add_argument("--device", default="auto")
    _storage_args(reward_bench)
    reward_bench.add_argument("--out", type=Path, default=Path("out/bench/rewards.json"))

    scaling = benches.add_parser("scaling", help="one config as 1, 2, ... data-parallel processes")
    scaling_source = scaling.add_mutually_exclusive_group()
    scaling_source.add_argument("--config", type=Path, help="a YAML training config")
    scaling_source.add_argument("--preset", default="shapes-geneval", help="a built-in preset (shapes-geneval)")
    scaling.add_argument("--processes", default="1,2", help="process counts to run (1,2)")
    scaling.add_argument("--iterations", type=int, default=6, help="iterations per run, the first a warm-up (6)")
    scaling.add_argument("--out", type=Path, default=Path("out/bench/scaling.json"))

    memory = benches.add_parser("memory", help="the admission memory estimate against measured peaks")
    memory.add_argument("--cases", default="", help="only the cases whose name contains this text")
    memory.add_argument("--out", type=Path, default=Path("out/bench/memory.json"))

    preference = benches.add_parser(
        "preference",
        help="simulated tastes: reward accuracy vs labels (random, uncertain first, closest to even), then training",
    )
    preference.add_argument("--tastes", default="left,large,warm", help="simulated tastes (left,large,warm)")
    preference.add_argument("--repeats", type=int, default=6, help="labeller seeds per taste and order (6)")
    preference.add_argument("--iterations", type=int, default=80, help="V-GRPO iterations per taste (80)")
    preference.add_argument("--time-budget-minutes", type=float, default=20.0, help="training budget per taste (20)")
    preference.add_argument(
        "--parts",
        default="labels,training",
        help="labels, training or both; a part not run is kept from an existing report in --out (labels,training)",
    )
    preference.add_argument("--preference-weight", type=float, default=0.25, help="pref:TASTE's weight in the mix")
    preference.add_argument("--work", type=Path, default=Path("out/bench-preference"), help="scratch runs")
    preference.add_argument("--out", type=Path, default=Path("out/bench/preference"))

    worker = commands.add_parser("worker", help="claim and run queued jobs from the database (one process each)")
    _storage_args(worker)
    worker.add_argument("--devices", help="cpu, cpu:N, cuda, cuda:0,1,... (default: every visible GPU, else cpu)")
    worker.add_argument("--jobs-per-device", type=int, default=1, help="jobs that may share one device (default 1)")
    worker.add_argument("--max-concurrent-jobs", type=int, help="a cap on jobs run at once besides the devices")
    worker.add_argument("--log-level", default="warning", help="debug, info, warning or error (warning)")
    worker.add_argument("--poll", type=float, default=1.0, help="seconds between queue polls")
    worker.add_argument("--stale-after", type=float, default=30.0, help="seconds without heartbeat before requeue")

    jobs = commands.add_parser("jobs", help="the job queue: submit, list, show, cancel")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    submit = job_commands.add_parser("submit", help="queue a training job; prints its id")
    _storage_args(submit)
    submit_source = submit.add_mutually_exclusive_group(required=True)
    submit_source.add_argument("--config", type=Path, help="a YAML training config")
    submit_source.add_argument("--preset", help="a built-in preset")
    submit.add_argument("--name", default="")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first")
    listing = job_commands.add_parser("list", help="jobs, newest first")
    _storage_args(listing)
    listing.add_argument("--status", help="only jobs in this status")
    listing.add_argument("--limit", type=int, default=50)
    show = job_commands.add_parser("show", help="one job")
    _storage_args(show)
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true")
    for verb in ("cancel", "pause", "resume", "retry"):
        control = job_commands.add_parser(verb, help=f"{verb} a job")
        _storage_args(control)
        control.add_argument("id", type=int)
    export = commands.add_parser(
        "export", help="write a trained LoRA for ComfyUI / AUTOMATIC1111 (kohya) or diffusers, at its trained strength"
    )
    export.add_argument("--lora", type=Path, required=True, help="a checkpoint .safetensors the studio saved")
    export.add_argument("--format", required=True, choices=("kohya", "diffusers"))
    export.add_argument("--base", help="its base model (default: the one the LoRA records)")
    export.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    from studio.cli_preference import add_commands

    add_commands(commands, _storage_args)
    return parser


def _storage_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="the studio's data directory (env VGRPO_HOME, default ./studio_data)")
    parser.add_argument("--db-url", help="database URL (default: SQLite studio.db in the data directory)")


def _load(args: argparse.Namespace):  # -> DenoiserAdapter
    from trainer_core.adapters import load_adapter

    adapter = load_adapter(args.model, _device(args.device))
    if args.lora is not None:
        adapter.load_lora(args.lora)
    return adapter


def _sampling(args: argparse.Namespace):  # -> SamplingConfig
    from trainer_core.shapes.evaluation import SamplingConfig

    return SamplingConfig(
        steps=args.steps, solver=args.solver, guidance_scale=args.guidance, batch_size=args.batch_size
    )


def cmd_sample(args: argparse.Namespace) -> None:
    from trainer_core.image_grid import save_grid
    from trainer_core.shapes.evaluation import generate_images

    seeds = parse_seeds(args.seeds)
    sampling = _sampling(args)
    pipe = _load(args)
    started = time.monotonic()
    prompts = [p for p in args.prompt for _ in seeds]
    images = generate_images(pipe, prompts, seeds * len(args.prompt), sampling)
    elapsed = time.monotonic() - started
    save_grid(images, rows=len(args.prompt), out=args.out, scale=args.scale, row_labels=args.prompt)
    print(f"{len(images)} images in {elapsed:.1f}s ({len(images) / elapsed:.1f} img/s) -> {args.out}")


def cmd_eval(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from trainer_core.shapes.evaluation import evaluate, format_table
    from trainer_core.shapes.prompt_sets import load_heldout, read_prompts_file

    specs = load_heldout() if args.prompt_set else read_prompts_file(args.prompts_file)
    if args.seeds < 1:
        raise CliError(f"--seeds: must be at least 1, got {args.seeds}")
    sampling = _sampling(args)
    pipe = _load(args)
    with tqdm(total=len(specs) * args.seeds, desc="eval", unit="img") as bar:
        result = evaluate(pipe, specs, args.seeds, sampling, on_progress=lambda done, _: bar.update(done - bar.n))
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            **result.to_json(),
            "model": args.model,
            "lora": str(args.lora) if args.lora else None,
            "sampling": {"steps": args.steps, "solver": args.solver, "guidance_scale": args.guidance},
        }
        args.out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.out}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    import dataclasses

    from trainer_core.shapes.pretrain import PretrainConfig, pretrain_shapes

    overrides = {
        k: v
        for k, v in {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "snapshot_every": args.snapshot_every,
            "train_text_encoder": args.train_text_encoder,
            "parse_weight": args.parse_weight,
            "relation_caption_accuracy": args.relation_caption_accuracy,
            "time_shift": args.time_shift,
        }.items()
        if v is not None
    }
    architecture = {name: True for name in ("pooled_modulation", "coordinate_channels") if getattr(args, name)}
    defaults = PretrainConfig()
    model = dataclasses.replace(defaults.model, **architecture)
    config = dataclasses.replace(defaults, model=model, **overrides)
    pretrain_shapes(config, args.out)
    print(f"saved the shapes pipeline to {args.out}")


def _train_arguments(args: argparse.Namespace, devices: int) -> list[str]:
    """`vgrpo train`'s arguments as given, for its data-parallel processes."""
    arguments = ["train", "--out", str(args.out), "--devices", str(devices)]
    for flag, value in (
        ("--config", args.config),
        ("--preset", args.preset),
        ("--data-dir", args.data_dir),
        ("--iterations", args.iterations),
        ("--time-budget-minutes", args.time_budget_minutes),
    ):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments + (["--resume"] if args.resume else [])


def cmd_train(args: argparse.Namespace) -> None:
    import dataclasses
    import subprocess

    from tqdm import tqdm

    from studio.launch import launched_by_torchrun, process_command
    from studio.runs import RunDirectory
    from studio.training import run_training
    from trainer_core.config import load_config, load_preset
    from trainer_core.distributed import init_from_environment

    if args.config is None and args.preset is None and not args.resume:
        raise CliError("train: give --config FILE or --preset NAME (or --resume an existing --out)")
    run = RunDirectory(args.out)
    if args.resume and run.exists():
        config = load_config(run.config_path)
    elif args.config is not None:
        config = load_config(args.config)
    elif args.preset is not None:
        config = load_preset(args.preset)
    else:
        raise CliError(f"--resume: {args.out} holds no run to resume")
    from storage.data_dir import DataDir
    from studio.paths import owner_paths

    data_dir = DataDir(args.data_dir)
    if not (args.resume and run.exists()):
        config = owner_paths(config, data_dir)  # relative paths: against this directory, as typed
    if args.iterations is not None:
        config = dataclasses.replace(config, iterations=args.iterations)
    if args.time_budget_minutes is not None:
        config = dataclasses.replace(config, time_budget_minutes=args.time_budget_minutes)
    if args.devices is not None:
        config = dataclasses.replace(config, resources=dataclasses.replace(config.resources, devices=args.devices))
    if config.resources.devices > 1 and not launched_by_torchrun():
        # the same command again, as resources.devices data-parallel processes
        arguments = _train_arguments(args, config.resources.devices)
        completed = subprocess.run(process_command("studio.cli", arguments, config.resources.devices), check=False)
        if completed.returncode:
            raise CliError(f"train: a process of the {config.resources.devices} failed (exit {completed.returncode})")
        return
    world = init_from_environment()
    done = len(run.read_metrics()) if args.resume else 0
    initial = min(done, config.iterations)
    bar = tqdm(total=config.iterations, initial=initial, desc="train", unit="it", disable=not world.is_main)

    def report(metrics: dict[str, float]) -> None:
        bar.n = int(metrics["iteration"])
        bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", img_s=f"{metrics['images_per_s']:.1f}")
        bar.refresh()

    result = run_training(config, args.out, resume=args.resume, on_iteration=report, data_dir=data_dir)
    bar.close()
    world.close()
    if not world.is_main:
        return
    if result.interrupted:
        print(f"stopped at iteration {result.iterations_done}; resume with: vgrpo train --out {args.out} --resume")
    else:
        print(f"done: {result.iterations_done} iterations; LoRA at {result.final_checkpoint}")


def cmd_bench(args: argparse.Namespace) -> None:
    benches = {
        "sampling": bench_sampling,
        "speed": bench_speed,
        "tune": bench_tune,
        "fixes": bench_fixes,
        "ablation": bench_ablation,
        "throughput": bench_throughput,
        "rewards": bench_rewards,
        "preference": bench_preference,
        "scaling": bench_scaling,
        "memory": bench_memory,
    }
    benches[args.bench](args)


def bench_scaling(args: argparse.Namespace) -> None:
    import dataclasses

    from studio.bench import format_rows, write_report
    from studio.bench.scaling import scaling_benchmark
    from trainer_core.config import load_config, load_preset

    config = load_config(args.config) if args.config else load_preset(args.preset)
    config = dataclasses.replace(config, iterations=args.iterations, time_budget_minutes=0.0)
    config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, sample_every=0))
    try:
        processes = [int(n) for n in args.processes.split(",")]
    except ValueError:
        raise CliError(f"--processes: comma-separated whole numbers, got {args.processes!r}") from None
    report = scaling_benchmark(config, processes, _device("auto"))
    write_report(report, args.out)
    print(f"scaling on {report['device']}: {report['images_per_iteration']} images per iteration")
    columns = ["processes", "iteration_s", "images_per_s", "speedup", "startup_s", "final_reward"]
    print(format_rows(report["results"], columns))  # type: ignore[arg-type]
    print(f"wrote {args.out}")


def bench_memory(args: argparse.Namespace) -> None:
    from studio.bench import format_rows, write_report
    from studio.bench.memory import CASES, memory_benchmark

    cases = tuple(case for case in CASES if args.cases in case.name)
    if not cases:
        raise CliError(f"--cases: no case contains {args.cases!r}; cases: {', '.join(c.name for c in CASES)}")
    report = memory_benchmark(cases)
    write_report(report, args.out)
    columns = ["case", "measured_gib", "estimated_gib", "error_pct", "activations_gib", "rollouts_gib"]
    print(format_rows(report["results"], columns))  # type: ignore[arg-type]
    print(f"mean |error| {report['mean_abs_error_pct']}%, max {report['max_abs_error_pct']}%; wrote {args.out}")


def bench_preference(args: argparse.Namespace) -> None:
    import shutil

    from studio.bench import format_rows
    from studio.bench.preference import (
        PreferenceBenchSettings,
        load_report,
        preference_benchmark,
        summary_rows,
        write_outputs,
    )

    settings = PreferenceBenchSettings(
        tastes=tuple(t.strip() for t in args.tastes.split(",") if t.strip()),
        repeats=args.repeats,
        iterations=args.iterations,
        time_budget_minutes=args.time_budget_minutes,
        preference_weight=args.preference_weight,
    )
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    previous = load_report(args.out / "preference.json") if (args.out / "preference.json").is_file() else None
    if args.work.exists():
        shutil.rmtree(args.work)  # scratch: a fresh data directory and runs every time
    report = preference_benchmark(settings, args.work, parts, previous, log=lambda line: print(line, flush=True))
    report.setdefault("commands", []).append("vgrpo " + " ".join(sys.argv[1:]))
    write_outputs(report, args.out)
    rows = summary_rows(report)
    print(format_rows(rows, list(dict.fromkeys(k for r in rows for k in r))))
    print(f"wrote {args.out}/preference.json and preference.md")


def bench_ablation(args: argparse.Namespace) -> None:
    from studio.bench import format_rows
    from studio.bench.ablation import (
        ABLATION_COLUMNS,
        VARIANTS,
        ablation_benchmark,
        ablation_settings,
        resumable_rows,
        write_ablation_report,
    )

    if args.iterations < 1 or args.eval_per_category < 1 or args.eval_seeds < 1:
        raise CliError("--iterations, --eval-per-category, --eval-seeds: must be at least 1")
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else list(VARIANTS)
    measured = []
    if args.out.exists():
        # an earlier run into the same file, perhaps interrupted: keep its rows, train only the rest
        settings = ablation_settings(args.iterations, args.seed, args.eval_per_category, args.eval_seeds)
        try:
            measured = resumable_rows(json.loads(args.out.read_text()), settings)
        except (ValueError, json.JSONDecodeError) as error:
            raise CliError(f"{args.out}: {error}") from error
    report = ablation_benchmark(
        variants,
        args.iterations,
        args.seed,
        args.eval_per_category,
        args.eval_seeds,
        measured=measured,
        on_progress=lambda partial: write_ablation_report(partial, args.out),
    )
    write_ablation_report(report, args.out)
    print(format_rows(report["results"], ABLATION_COLUMNS))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


def bench_rewards(args: argparse.Namespace) -> None:
    from storage.data_dir import DataDir
    from studio.bench import format_rows, write_report
    from studio.bench.rewards import reward_benchmark
    from trainer_core.rewards.base import RewardModelConfig
    from trainer_core.rewards.registry import reward_specs

    models_dir = args.models_dir or DataDir(args.data_dir).models
    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
    elif args.random_weights:
        names = list(reward_specs())
    else:  # every reward that can load here
        names = [n for n, spec in reward_specs().items() if not spec.missing(RewardModelConfig(), models_dir)]
    report = reward_benchmark(
        names, models_dir, args.images, args.resolution, device=args.device, random_weights=args.random_weights
    )
    write_report(report, args.out)
    print(f"reward scoring on {report['device']}, {args.images} images of {args.resolution} px per batch")
    print(format_rows(report["results"], ["reward", "ms_per_image"]))  # type: ignore[arg-type]
    print(f"wrote {args.out}")


def bench_throughput(args: argparse.Namespace) -> None:
    import dataclasses

    from studio.bench import format_rows, write_report
    from studio.bench.throughput import THROUGHPUT_COLUMNS, throughput_benchmark
    from trainer_core.config import load_config, load_preset

    if args.iterations < 1:
        raise CliError(f"--iterations: must be at least 1, got {args.iterations}")
    adapter = None
    if args.model_config:
        from studio.bench.throughput import real_size_run

        if not args.random_weights:
            raise CliError("--model-config: add --random-weights (nothing is downloaded, so the weights are random)")
        config, adapter = real_size_run(
            args.model_config,
            args.device,
            args.resolution,
            args.prompts_per_iteration,
            args.group_size,
            args.steps,
            t5=not args.no_t5,
        )
    else:
        config = load_config(args.config) if args.config else load_preset(args.preset)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, device=args.device))
    report = throughput_benchmark(config, args.iterations, adapter)
    if args.model_config:
        t5 = any(type(m).__name__ == "T5EncoderModel" for m in adapter.text_encoders())  # type: ignore[union-attr]
        report.update(model_config=args.model_config, random_weights=True, t5=t5)
    write_report(report, args.out)
    print(
        f"throughput of {report['algorithm']} on {report['device']}, {report['images_per_iteration']} images/iteration"
    )
    rows = [{"timing": "free-running", **report["mean"]}]
    if "phases_synchronised" in report:  # on a GPU: the phase split needs a synchronisation at each boundary
        rows.append({"timing": "synchronised", **report["phases_synchronised"]})
    print(format_rows(rows, ["timing", *THROUGHPUT_COLUMNS]))
    print(f"peak memory {report['peak_memory_mb']} MB; wrote {args.out}")


def bench_speed(args: argparse.Namespace) -> None:
    from studio.bench import write_report
    from studio.bench.speed import (
        method_configs,
        resumable_runs,
        speed_benchmark,
        speed_settings,
        write_speed_report,
    )

    _check_budgeted_arguments(args, "seeds", "marks", "eval_per_category", "eval_seeds")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    files = _config_files(args.config)
    configs = method_configs(methods, args.model, args.device, files)
    progress = args.out / "speed.progress.json"
    finished = []
    if progress.exists():
        # an interrupted run into the same folder: keep its finished runs, train only the rest
        settings = speed_settings(configs, args.budget_minutes, args.marks, args.eval_per_category, args.eval_seeds)
        try:
            finished = resumable_runs(json.loads(progress.read_text()), settings)
        except (ValueError, json.JSONDecodeError) as error:
            raise CliError(f"{progress}: {error}") from error
    report = speed_benchmark(
        configs,
        args.budget_minutes,
        list(range(args.seeds)),
        args.marks,
        args.eval_per_category,
        args.eval_seeds,
        sources={method: str(file) for method, file in files.items()},
        finished=finished,
        on_progress=lambda partial: write_report(partial, progress),
    )
    print(write_speed_report(report, args.out))
    progress.unlink(missing_ok=True)  # speed.json now holds every run
    print(f"wrote {args.out}/speed.json, speed.md, accuracy_vs_wall_clock.png")


def _check_budgeted_arguments(args: argparse.Namespace, *counts: str) -> None:
    """The wall-clock benchmarks' arguments: a positive --budget-minutes and each of `counts` at least 1."""
    if args.budget_minutes <= 0:
        raise CliError(f"--budget-minutes: must be positive, got {args.budget_minutes}")
    if any(getattr(args, name) < 1 for name in counts):
        raise CliError(", ".join("--" + name.replace("_", "-") for name in counts) + ": must be at least 1")


def _finished_so_far(progress: Path, settings: dict[str, object], key: str) -> list[dict[str, object]]:
    """The `key` entries of an interrupted benchmark's progress file, refused when it ran with other
    settings (the file is left as it is); none when there is no file."""
    if not progress.exists():
        return []
    try:
        previous = json.loads(progress.read_text())
    except json.JSONDecodeError as error:
        raise CliError(f"{progress}: not a progress file ({error}); use another --out") from error
    if previous.get("settings") != settings:
        raise CliError(f"{progress}: from a run with other settings ({previous.get('settings')}); use another --out")
    return list(previous[key])


def bench_tune(args: argparse.Namespace) -> None:
    from studio.bench import write_report
    from studio.bench.speed import method_configs
    from studio.bench.tuning import TUNING_KNOBS, tune, write_tuning_report
    from trainer_core.config import LR_SCHEDULES

    _check_budgeted_arguments(args, "seeds", "eval_per_category", "eval_seeds")
    if args.lr_schedule not in LR_SCHEDULES:
        raise CliError(f"--lr-schedule: must be one of {', '.join(LR_SCHEDULES)}, got {args.lr_schedule!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in TUNING_KNOBS]
    if unknown:
        raise CliError(f"--methods: no tuning grid for {unknown[0]!r}; allowed: {', '.join(TUNING_KNOBS)}")
    configs = method_configs(methods, args.model, args.device)
    settings = {
        "methods": methods,
        "budget_minutes": args.budget_minutes,
        "seeds": args.seeds,
        "lr_schedule": args.lr_schedule,
        "eval_per_category": args.eval_per_category,
        "eval_seeds": args.eval_seeds,
        "model": args.model,
    }
    progress = args.out / "tuning.progress.json"
    finished = _finished_so_far(progress, settings, "probes")
    report = tune(
        configs,
        args.budget_minutes,
        list(range(args.seeds)),
        args.lr_schedule,
        args.eval_per_category,
        args.eval_seeds,
        finished=finished,
        on_progress=lambda probes: write_report({"settings": settings, "probes": probes}, progress),
    )
    write_report({**report, "settings": settings}, args.out / "tuning.json")
    print(write_tuning_report(report, args.out))
    progress.unlink(missing_ok=True)
    print(f"wrote {args.out}/tuning.json, tuning.md and " + ", ".join(f"{m}.yaml" for m in methods))


def bench_fixes(args: argparse.Namespace) -> None:
    from studio.bench import write_report
    from studio.bench.baseline_fixes import BASELINE_FIXES, fixes_benchmark, write_fixes_report
    from studio.bench.speed import method_configs
    from trainer_core.config import to_dict

    _check_budgeted_arguments(args, "seeds", "marks", "eval_per_category", "eval_seeds")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in BASELINE_FIXES]
    if unknown:
        raise CliError(f"--methods: no fixes to undo for {unknown[0]!r}; allowed: {', '.join(BASELINE_FIXES)}")
    configs = method_configs(methods, args.model, args.device, _config_files(args.config))
    settings = {
        "budget_minutes": args.budget_minutes,
        "seeds": args.seeds,
        "marks": args.marks,
        "eval_per_category": args.eval_per_category,
        "eval_seeds": args.eval_seeds,
        "configs": json.loads(json.dumps({m: to_dict(c) for m, c in configs.items()})),
    }
    progress = args.out / "fixes.progress.json"
    finished = _finished_so_far(progress, settings, "runs")
    report = fixes_benchmark(
        configs,
        args.budget_minutes,
        list(range(args.seeds)),
        args.marks,
        args.eval_per_category,
        args.eval_seeds,
        finished=finished,
        on_progress=lambda runs: write_report({"settings": settings, "runs": runs}, progress),
    )
    print(write_fixes_report({**report, "settings": settings}, args.out))
    progress.unlink(missing_ok=True)
    print(f"wrote {args.out}/fixes.json and fixes.md")


def bench_sampling(args: argparse.Namespace) -> None:
    from studio.bench import format_rows, write_report
    from studio.bench.sampling import sampling_throughput
    from trainer_core.samplers import get_solver

    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    for solver in solvers:
        get_solver(solver)
    if args.batch_size < 1 or args.steps < 1 or args.repeats < 1:
        raise CliError("--batch-size, --steps, --repeats: must be at least 1")
    report = sampling_throughput(args.model, args.batch_size, args.steps, solvers, args.repeats, _device(args.device))
    write_report(report, args.out)
    print(f"sampling on {report['device']}")
    print(
        format_rows(
            report["results"], ["solver", "steps", "nfe", "batch_size", "seconds_per_batch_mean", "images_per_s"]
        )
    )
    print(f"wrote {args.out}")


def _job_service(args: argparse.Namespace) -> JobService:
    from storage.data_dir import DataDir
    from storage.db import Database
    from studio.jobs import JobService

    data_dir = DataDir(args.data_dir).create()
    return JobService(Database.open(args.db_url or data_dir.default_url()), data_dir)


def cmd_worker(args: argparse.Namespace) -> None:
    from studio.scheduler import JobScheduler

    service = _job_service(args)
    from studio.devices import parse_devices
    from studio.logs import configure

    configure(args.log_level)
    devices = parse_devices(args.devices) if args.devices else None
    scheduler = JobScheduler(
        service.db.url,
        service.data_dir,
        args.max_concurrent_jobs,
        args.poll,
        args.stale_after,
        devices=devices,
        jobs_per_device=args.jobs_per_device,
    )
    devices_text = ",".join(scheduler.pool.devices)
    print(
        f"worker {scheduler.worker_id} on {service.db.url}: devices {devices_text}, "
        f"{scheduler.pool.jobs_per_device} job(s) per device",
        flush=True,
    )
    scheduler.run_forever()  # until Ctrl-C or SIGTERM
    scheduler.shutdown()  # no longer offers its devices
    print("worker stopped; running jobs continue in their own processes", flush=True)


def cmd_jobs(args: argparse.Namespace) -> None:
    import json

    from studio.bench import format_rows
    from studio.jobs import JobError
    from studio.paths import owner_paths
    from trainer_core.config import load_config, load_preset, to_dict

    service = _job_service(args)
    try:
        if args.jobs_command == "submit":
            config = load_config(args.config) if args.config else load_preset(args.preset)
            config = owner_paths(config, service.data_dir)  # the worker may run elsewhere: paths made absolute
            print(service.submit(to_dict(config), args.name, args.priority))
        elif args.jobs_command == "list":
            rows = [_job_row(v) for v in service.list_jobs(args.limit, status=args.status)]
            columns = ["id", "status", "progress", "reward", "eta", "algorithm", "created", "name"]
            print(format_rows(rows, columns) if rows else "no jobs")
        elif args.jobs_command == "show":
            view = service.view(args.id)
            if args.json:
                data = {**view.__dict__, "created_at": view.created_at.isoformat()}
                data["config"] = service.get(args.id).config
                print(json.dumps(data, indent=2))
            else:
                for key, value in _job_row(view).items():
                    print(f"{key:10} {value}")
                if view.error:
                    print(f"error      {view.error.strip().splitlines()[-1]}")
        else:
            getattr(service, args.jobs_command)(args.id)
            print(f"job {args.id}: {service.get(args.id).status}")
    except JobError as error:
        raise CliError(str(error)) from None


def _job_row(view: JobView) -> dict[str, object]:
    return {
        "id": view.id,
        "status": view.status,
        "progress": f"{view.iteration}/{view.total_iterations}",
        "reward": "-" if view.reward_mean is None else f"{view.reward_mean:.3f}",
        "eta": "-" if view.eta_s is None else f"{view.eta_s:.0f}s",
        "algorithm": view.algorithm,
        "created": view.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "name": view.name,
    }


def _preference_command(name: str):  # -> Callable[[argparse.Namespace], None]
    def run(args: argparse.Namespace) -> None:
        from studio import cli_preference

        getattr(cli_preference, f"cmd_{name}")(args)

    return run


def cmd_export(args: argparse.Namespace) -> None:
    from studio.export import export_file

    if args.out.suffix != ".safetensors":
        raise CliError(f"--out: must end in .safetensors, got {args.out}")
    metadata = export_file(args.lora, args.out, args.format, args.base)
    print(f"wrote {args.out} ({args.format}, {metadata['family']} family, rank {metadata['rank']})")


COMMANDS = {
    "export": cmd_export,
    "label": _preference_command("label"),
    "labels": _preference_command("labels"),
    "reward": _preference_command("reward"),
    "sample": cmd_sample,
    "eval": cmd_eval,
    "pretrain-shapes": cmd_pretrain,
    "train": cmd_train,
    "bench": cmd_bench,
    "worker": cmd_worker,
    "jobs": cmd_jobs,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        COMMANDS[args.command](args)
    except (CliError, ValueError, FileNotFoundError, FileExistsError) as error:
        if isinstance(error, ValueError) and not is_input_error(error):
            raise  # a bug, not bad input: its traceback is what someone needs
        print(f"vgrpo {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


#: "field: what is wrong", the studio's way of naming bad input ("optimizer.learning_rate: ...",
#: "--names: ...", "job 3: ...", "rewards.weights.pickscore: ...", "prompts.txt:3: ...")
FIELD_MESSAGE = re.compile(r"^(--)?[\w/~.][\w.\-\[\]@/]*(:\d+)?( [\w.\-@]+)?: ")


def is_input_error(error: ValueError) -> bool:
    """Whether a ValueError reports bad input (shown as one line) rather than a bug (shown with its
    traceback): config and job errors always, any other only when it names a field."""
    from studio.devices import DeviceError
    from studio.jobs import JobError
    from trainer_core.config import ConfigError

    return isinstance(error, ConfigError | JobError | DeviceError) or bool(FIELD_MESSAGE.match(str(error)))


if __name__ == "__main__":
    sys.exit(main())
