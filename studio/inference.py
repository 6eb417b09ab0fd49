"""Inference for the web app, run by workers as short jobs, so that the web process loads no model.

Compare and the Label tab's image generation are stored as jobs of their own kind (`compare`,
`generate`) at a high priority. A worker runs them in a job process beside training (one inference job
at a time per device: no optimiser state, seconds to minutes), writes the result into the job's run
directory (`result.json`, and the images as `images.npz`, read back with `allow_pickle=False`), and
reports progress as the job's iteration: images done of `total_iterations`. The web process waits on the
database and shows that progress.

Two runners give the rest of the studio one interface: `WorkerInference` (the web app: the work goes to
workers through the queue) and `InlineInference` (the command line, scripts and library use: the work
runs in the calling process, its models kept loaded).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from storage.models import Job, JobStatus
from studio.compare import BASE, AdapterLoader, CompareResult, compare_checkpoints, resolve_checkpoint
from studio.jobs import JobError, JobService
from trainer_core.files import atomic_path, write_atomic

INFERENCE_KINDS = ("compare", "generate")
#: ahead of every training job in the queue
INFERENCE_PRIORITY = 1000
RESULT, IMAGES = "result.json", "images.npz"


class NoWorkerError(JobError):
    """Inference asked for while no worker runs to do it."""


def submit_compare(
    service: JobService, checkpoints: list[int | str], prompts: list[str], seeds: list[int], heldout: int = 0
) -> int:
    """Queue a Compare of 2-4 checkpoints on prompts x seeds (checked here, before anything is stored)."""
    if not 2 <= len(checkpoints) <= 4:
        raise ValueError(f"checkpoints: pick 2 to 4, got {len(checkpoints)}")
    if not prompts or not seeds:
        raise ValueError("prompts, seeds: give at least one of each")
    bases = {base for _, base, _ in (resolve_checkpoint(service, c) for c in checkpoints) if base is not None}
    if len(bases) > 1:
        raise ValueError(f"checkpoints: they come from different base models ({', '.join(sorted(bases))})")
    payload = {"checkpoints": list(checkpoints), "prompts": prompts, "seeds": seeds, "heldout": heldout}
    return service.submit_task("compare", payload, f"compare {len(checkpoints)} checkpoints", len(checkpoints))


def submit_generate(service: JobService, checkpoint: str, base_model: str, prompts: list[str], seeds: list[int]) -> int:
    """Queue images of one checkpoint ("base" or an id) of `base_model`, image i from prompts[i], seeds[i]."""
    if len(prompts) != len(seeds) or not prompts:
        raise ValueError(f"prompts, seeds: one seed per prompt, at least one; got {len(prompts)} and {len(seeds)}")
    payload = {"checkpoint": checkpoint, "base_model": base_model, "prompts": prompts, "seeds": seeds}
    return service.submit_task("generate", payload, f"generate {len(prompts)} images", 1)


def run_inference(
    service: JobService, job: Job, progress: Callable[[int], None], adapters: AdapterLoader | None = None
) -> None:
    """Run an inference job in the worker's job process, writing its result to its run directory;
    `adapters` keeps models loaded between the jobs one process runs."""
    out = service.data_dir.run_dir(job.id)
    out.mkdir(parents=True, exist_ok=True)
    payload = job.config
    if job.kind == "compare":
        result = compare_checkpoints(
            service,
            [c if c == BASE else int(c) for c in payload["checkpoints"]],
            payload["prompts"],
            payload["seeds"],
            payload["heldout"],
            on_checkpoint=progress,
            adapters=adapters,
        )
        _write(out, {k: v for k, v in asdict(result).items() if k != "images"}, result.images)
    elif job.kind == "generate":
        from studio.labeling import generate_with

        checkpoint, base_model = payload["checkpoint"], payload["base_model"]
        images = generate_with(service, checkpoint, base_model, payload["prompts"], payload["seeds"], adapters)
        progress(1)
        _write(out, {"images": len(images)}, [images])
    else:
        raise JobError(f"job {job.id}: unknown kind {job.kind!r}; known: train, {', '.join(INFERENCE_KINDS)}")


def _write(out: Path, result: dict[str, Any], images: list[np.ndarray]) -> None:
    """The images first, the result last: a result file means the job's output is whole."""
    with atomic_path(out / IMAGES) as partial:
        np.savez(partial, *images)
    write_atomic(out / RESULT, json.dumps(result))


def _read(service: JobService, job_id: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The job's result, once: its files are removed when read (a labelling session makes many)."""
    out = service.data_dir.run_dir(job_id)
    if not (out / RESULT).is_file():
        raise JobError(f"job {job_id}: no result (already read, or the job did not finish)")
    with np.load(out / IMAGES, allow_pickle=False) as archive:
        images = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    result = json.loads((out / RESULT).read_text())
    for name in (IMAGES, RESULT):
        (out / name).unlink()
    with contextlib.suppress(OSError):
        out.rmdir()  # unless the worker's log is there
    return result, images


def compare_result(service: JobService, job_id: int) -> CompareResult:
    result, images = _read(service, job_id)
    return CompareResult(
        result["labels"], result["prompts"], result["seeds"], images, result["scores"], result["accuracy"]
    )


def generated_images(service: JobService, job_id: int) -> np.ndarray:
    return _read(service, job_id)[1][0]


def progress_text(service: JobService, job: Job) -> str:
    """What a person waiting on an inference job reads."""
    if job.status == JobStatus.QUEUED:
        ahead = service.queued_ahead(job)
        return f"waiting for a worker ({ahead} job{'s' * (ahead != 1)} ahead)" if ahead else "waiting for a worker"
    if job.status == JobStatus.RUNNING:
        if job.kind == "compare":
            return f"generating: checkpoint {min(job.iteration + 1, job.total_iterations)} of {job.total_iterations}"
        return "generating"
    return str(job.status)


def check(service: JobService, job_id: int) -> str | None:
    """None when the inference job is done, else what a person waiting reads; raises with the job's error
    when it failed, NoWorkerError (and cancels it) when it is queued and no worker runs to take it."""
    job = service.get(job_id)
    if job.status == JobStatus.DONE:
        return None
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        reason = (job.error or job.status).strip().splitlines()[-1]
        raise JobError(f"{job.name} failed: {reason}")
    if job.status == JobStatus.QUEUED and not service.live_workers():
        service.cancel(job_id)
        raise NoWorkerError(
            "no worker is running to generate images: start the app without --devices none, "
            "or `vgrpo worker` on a machine that shares this database"
        )
    return progress_text(service, job)


def wait(
    service: JobService,
    job_id: int,
    on_progress: Callable[[str], None] | None = None,
    timeout_s: float = 1800.0,
    poll_s: float = 0.3,
) -> None:
    """Until the inference job is done (see `check`); cancelled after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (text := check(service, job_id)) is not None:
        if time.monotonic() > deadline:
            service.cancel(job_id)
            raise JobError(f"job {job_id}: not done after {timeout_s:.0f} s; cancelled")
        if on_progress is not None:
            on_progress(text)
        time.sleep(poll_s)


class WorkerInference:
    """Compare and labelling images made by workers, through the queue (the web app's runner)."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def start_compare(self, checkpoints: list[int | str], prompts: list[str], seeds: list[int], heldout: int) -> int:
        return submit_compare(self.service, checkpoints, prompts, seeds, heldout)

    def progress(self, job_id: int) -> str | None:
        return check(self.service, job_id)

    def compare_result(self, job_id: int) -> CompareResult:
        return compare_result(self.service, job_id)

    def generate(self, checkpoint: str, base_model: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
        job_id = submit_generate(self.service, checkpoint, base_model, prompts, seeds)
        wait(self.service, job_id)
        return generated_images(self.service, job_id)


class InlineInference:
    """The same, run in the calling process with its models kept loaded (command line, scripts)."""

    def __init__(self, service: JobService) -> None:
        from studio.compare import AdapterCache

        self.service = service
        self.adapters = AdapterCache(service.data_dir.models)
        self.results: dict[int, CompareResult] = {}

    def start_compare(self, checkpoints: list[int | str], prompts: list[str], seeds: list[int], heldout: int) -> int:
        result = compare_checkpoints(self.service, checkpoints, prompts, seeds, heldout, adapters=self.adapters)
        key = -1 - len(self.results)  # never a job id
        self.results[key] = result
        return key

    def progress(self, job_id: int) -> str | None:
        return None  # done before start_compare returned

    def compare_result(self, job_id: int) -> CompareResult:
        return self.results.pop(job_id)

    def generate(self, checkpoint: str, base_model: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
        from studio.labeling import generate_with

        return generate_with(self.service, checkpoint, base_model, prompts, seeds, self.adapters)


Inference = WorkerInference | InlineInference
