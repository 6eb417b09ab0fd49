"""`vgrpo bench sampling`: images per second of deterministic ODE sampling."""

from __future__ import annotations

import time

import torch

from studio.bench import device_name
from trainer_core.adapters import load_adapter
from trainer_core.samplers import SOLVER_NFE


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
