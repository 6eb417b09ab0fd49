"""Benchmarks behind `vgrpo bench ...`: each writes JSON and prints a table."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from trainer_core.adapters import load_adapter
from trainer_core.samplers import SOLVER_NFE


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def sampling_throughput(
    model: str, batch_size: int, steps: int, solvers: list[str], repeats: int, device: str
) -> dict[str, object]:
    """Images per second of deterministic sampling, one warm-up batch then `repeats` timed batches."""
    adapter = load_adapter(model, device)
    embeddings = adapter.encode_prompts(["two red circles left of a blue square"] * batch_size)
    noise = adapter.noise(list(range(batch_size)))
    rows = []
    for solver in solvers:
        adapter.sample(embeddings, noise, steps, solver)  # warm-up
        timings = []
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            adapter.sample(embeddings, noise, steps, solver)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
        best, mean = min(timings), sum(timings) / len(timings)
        rows.append(
            {
                "solver": solver,
                "steps": steps,
                "nfe": SOLVER_NFE[solver](steps),
                "batch_size": batch_size,
                "seconds_per_batch_mean": round(mean, 4),
                "seconds_per_batch_best": round(best, 4),
                "images_per_s": round(batch_size / mean, 2),
            }
        )
    return {"benchmark": "sampling", "model": model, "device": device_name(device), "results": rows}


def format_rows(rows: list[dict[str, object]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def write_report(report: dict[str, object], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
