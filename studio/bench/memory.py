"""`vgrpo bench memory`: the admission estimate against the peak memory of real training processes.

Each case trains one iteration in a fresh process (`vgrpo train`) and reads that process's peak resident
memory from the kernel (`os.wait4`'s rusage); its estimate comes from `trainer_core.memory_estimate` on
the same config and model. Cases span the shapes model (batch sizes, group sizes, a baseline, gradient
checkpointing) and the test suite's tiny SD1.5, SDXL, SD3 and FLUX pipelines at 128 px, so that the
activations, not the interpreter, dominate some of them. On a GPU the same cases would read
`torch.cuda.max_memory_allocated`; this bench measures the CPU the project is developed on.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from studio.bench import device_name
from trainer_core.adapters import model_family
from trainer_core.config import LoggingConfig, TrainConfig, dump_config, load_preset
from trainer_core.lora import LoraSpec
from trainer_core.memory_estimate import GIB, estimate_peak_memory
from trainer_core.model_zoo import resolve_model
from trainer_core.rewards.base import RewardMixConfig

TINY_FAMILIES = ("sd15", "sdxl", "sd3", "flux")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    model: str  # "shapes-base" or a tiny family
    changes: dict[str, dict[str, Any]]  # config sections -> fields


CASES = (
    Case("shapes quickstart", "shapes-base", {}),
    Case("shapes batch 16", "shapes-base", {"rollout": {"batch_size": 16}}),
    Case("shapes batch 256", "shapes-base", {"rollout": {"batch_size": 256}}),
    Case("shapes 1024 images", "shapes-base", {"rollout": {"prompts_per_iteration": 16, "group_size": 64}}),
    Case("shapes n_mc 8, batch 256", "shapes-base", {"rollout": {"batch_size": 256}, "vgrpo": {"n_mc": 8}}),
    Case(
        "shapes checkpointing, batch 256",
        "shapes-base",
        {"rollout": {"batch_size": 256}, "model": {"gradient_checkpointing": "on"}},
    ),
    Case("shapes flow-grpo", "shapes-base", {"algorithm": {"": "flow-grpo"}}),
    *(Case(f"tiny {f} 128 px, batch 16", f, {"rollout": {"batch_size": 16}}) for f in TINY_FAMILIES),
    *(Case(f"tiny {f} 128 px, batch 64", f, {"rollout": {"batch_size": 64}}) for f in TINY_FAMILIES),
    *(
        Case(
            f"tiny {f} 128 px, batch 64, checkpointing",
            f,
            {"rollout": {"batch_size": 64}, "model": {"gradient_checkpointing": "on"}},
        )
        for f in ("sdxl", "sd3")
    ),
)


def case_config(case: Case, model: str) -> TrainConfig:
    """The quickstart preset for one iteration on `model`, with the case's changes; tiny models train at
    128 px with no checkpointing or offload (so their activations are measured whole) on a JPEG reward."""
    config = load_preset("shapes-quickstart")
    config = dataclasses.replace(
        config,
        iterations=1,
        time_budget_minutes=0.0,
        logging=LoggingConfig(sample_every=0, checkpoint_every=1),
    )
    if case.model != "shapes-base":
        config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, resolution=128, gradient_checkpointing="off", offload="off"),
            rollout=dataclasses.replace(config.rollout, prompts="train", steps=4),
            lora=LoraSpec(rank=4, alpha=4),
            rewards=RewardMixConfig({"jpeg_compressibility": 1.0}),
        )
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, name=model, device="cpu"))
    for section, values in case.changes.items():
        if section == "algorithm":
            config = dataclasses.replace(config, algorithm=values[""])
        else:
            config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})
    return config


def tiny_models(root: Path) -> dict[str, str]:
    """The test suite's tiny pipelines, saved under `root`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    import tiny_pipelines

    return {
        "sd15": tiny_pipelines.tiny_sd15(root),
        "sdxl": tiny_pipelines.tiny_sdxl(root),
        "sd3": tiny_pipelines.tiny_sd3(root),
        "flux": tiny_pipelines.tiny_flux(root),
    }


def measured_peak(config: TrainConfig, scratch: Path) -> tuple[int, float]:
    """(peak resident bytes, seconds) of one `vgrpo train` process on `config`."""
    path = scratch / "config.yaml"
    path.write_text(dump_config(config))
    out = scratch / f"run-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "studio.cli", "train", "--config", str(path), "--out", str(out)]
    command += ["--data-dir", str(scratch / "data")]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"vgrpo train failed:\n{process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return usage.ru_maxrss * 1024, time.perf_counter() - started  # Linux reports kilobytes


def memory_benchmark(cases: tuple[Case, ...] = CASES) -> dict[str, object]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="vgrpo-memory-") as scratch_name:
        scratch = Path(scratch_name)
        needed = {case.model for case in cases} - {"shapes-base"}
        models = tiny_models(scratch) if needed else {}
        for case in cases:
            name = case.model if case.model == "shapes-base" else models[case.model]
            config = case_config(case, name)
            estimate = estimate_peak_memory(config, resolve_model(name), "cpu", family=model_family(name))
            peak, seconds = measured_peak(config, scratch)
            rows.append(
                {
                    "case": case.name,
                    "measured_gib": round(peak / GIB, 3),
                    "estimated_gib": round(estimate.total / GIB, 3),
                    "error_pct": round(100 * (estimate.total - peak) / peak, 1),
                    "activations_gib": round(estimate.activations / GIB, 3),
                    "rollouts_gib": round(estimate.rollouts / GIB, 3),
                    "decode_gib": round(estimate.decode / GIB, 3),
                    "seconds": round(seconds, 1),
                    "config": {"model": case.model, **case.changes},
                }
            )
            print(f"{case.name}: measured {peak / GIB:.3f} GiB, estimated {estimate.total / GIB:.3f} GiB", flush=True)
    errors = [abs(row["error_pct"]) for row in rows]  # type: ignore[arg-type]
    return {
        "benchmark": "memory",
        "device": device_name("cpu"),
        "measure": "peak resident memory of one `vgrpo train` process (1 iteration), from os.wait4",
        "results": rows,
        "max_abs_error_pct": max(errors),
        "mean_abs_error_pct": round(sum(errors) / len(errors), 1),
    }
