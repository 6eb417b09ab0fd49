"""One claimed job, run in its own process (`python -m studio.job_process ...`), so that a job that
crashes or is killed never takes the app or the scheduler down.

The process heartbeats from a thread, writes metrics, sample grids and checkpoints through the job
service as the run directory gets them, resumes from the run's last checkpoint when the job was run
before, and stops at the next iteration boundary (with a checkpoint) when the job is cancelled or
paused, or when its lease was taken over by another worker.

A job of several devices runs this module once per rank under torchrun: rank 0 alone heartbeats and
writes to the database and the run directory (the lease is the job's, not a rank's); the other ranks
read the job and train their share. When a rank dies, torchrun stops the others and the scheduler sees
the job's process end without finishing the job, which requeues it to resume from its last checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import JobStatus
from studio.failures import classify
from studio.jobs import JobService
from studio.logs import quiet_libraries
from studio.runs import RunDirectory
from studio.training import run_training
from trainer_core.config import TrainConfig, from_dict
from trainer_core.distributed import World, init_from_environment

HEARTBEAT_S = 2.0
#: how long an inference process waits for the next request, its models loaded, before it ends
INFERENCE_IDLE_S = 60.0


def progress_line(metrics: dict[str, float], total: int) -> str:
    """One iteration as the log tail shows it: where the run is, its reward, its pace, when it ends."""
    iteration = int(metrics["iteration"])
    per_iteration = metrics["wall_time_s"] / max(iteration, 1)  # includes sample grids and checkpoints
    minutes, seconds = divmod(round(per_iteration * max(total - iteration, 0)), 60)
    return (
        f"iteration {iteration}/{total} · reward {metrics['reward_mean']:.3f} · "
        f"{metrics['iteration_s']:.1f} s/it · ETA {minutes} min {seconds:02d} s"
    )


@contextlib.contextmanager
def heartbeating(
    service: JobService, job_id: int, token: str, every_s: float, stop: threading.Event | None = None
) -> Iterator[None]:
    """The claim's lease refreshed every `every_s` while the block runs; `stop` is set when the job should
    stop at its next boundary (cancel or pause requested, or the lease taken over by another worker)."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            status = service.heartbeat(job_id, token)
            if stop is not None and status in (JobStatus.CANCELLING, JobStatus.PAUSING, "lost"):
                stop.set()

    heart = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    heart.start()
    try:
        yield
    finally:
        done.set()
        heart.join()


def ended_by(error: Exception) -> tuple[str, str]:
    """The outcome and stored error of a job whose run raised `error`: "failed" when it would fail the same
    way again, "error" (retried after a backoff) when it may pass (`studio.failures`)."""
    failure = classify(error)
    return ("error" if failure.retry else "failed"), failure.text()


def run_claimed_job(
    service: JobService,
    job_id: int,
    token: str,
    heartbeat_s: float = HEARTBEAT_S,
    world: World | None = None,
    idle_s: float = INFERENCE_IDLE_S,
) -> str:
    """Train the job to its end or to a stop request; returns the status it ended in (rank 0), or "rank"
    on the other ranks of a data-parallel job."""
    world = world or World()
    job = service.get(job_id)
    if job.kind != "train":
        return serve_inference(service, job_id, token, heartbeat_s, idle_s)
    if not world.is_main:
        run_dir = service.data_dir.run_dir(job_id)
        resume = bool(world.broadcast(None))
        run_training(from_dict(TrainConfig, job.config), run_dir, resume=resume, data_dir=service.data_dir)
        return "rank"
    service.set_worker_process(job_id, token, socket.gethostname(), os.getpid())
    stop = threading.Event()

    def on_iteration(metrics: dict[str, float]) -> None:
        print(progress_line(metrics, job.total_iterations), flush=True)  # the Jobs tab's log tail
        if not service.record_iteration(job_id, token, metrics):
            stop.set()  # another worker owns the job now: write nothing more

    try:
        with heartbeating(service, job_id, token, heartbeat_s, stop):  # the lease, from the start
            config: TrainConfig = from_dict(TrainConfig, job.config)
            run_dir = service.data_dir.run_dir(job_id)
            run = RunDirectory(run_dir)
            resume = bool(world.broadcast(run.exists()))  # decided before any rank writes
            service.forget_metrics_after(job_id, (run.latest_checkpoint() or 0) if resume else 0)
            result = run_training(
                config,
                run_dir,
                resume=resume,
                on_iteration=on_iteration,
                should_stop=stop.is_set,
                data_dir=service.data_dir,
                on_checkpoint=lambda iteration, path: service.record_checkpoint(job_id, iteration, str(path)),
                on_samples=lambda iteration, path: service.record_samples(
                    job_id,
                    iteration,
                    str(path),
                    list(config.logging.sample_prompts),
                    list(range(config.logging.sample_seeds)),
                ),
            )
        outcome, error = ("stopped" if result.interrupted else "done"), None
    except Exception as exc:  # the job failed; the process itself ends cleanly
        outcome, error = ended_by(exc)
    return service.finish(job_id, token, outcome, error)


def serve_inference(
    service: JobService, job_id: int, token: str, heartbeat_s: float = HEARTBEAT_S, idle_s: float = INFERENCE_IDLE_S
) -> str:
    """Run the claimed inference job, then, while more come within `idle_s`, claim and run those too with
    the models kept loaded (a labelling session's batches, the next Compare); returns the last status."""
    from studio.compare import AdapterCache
    from studio.inference import INFERENCE_KINDS, run_inference

    adapters = AdapterCache(service.data_dir.models)
    host = socket.gethostname()
    status = ""
    while True:
        service.set_worker_process(job_id, token, host, os.getpid())
        try:
            with heartbeating(service, job_id, token, heartbeat_s):
                run_inference(
                    service,
                    service.get(job_id),
                    lambda steps, job_id=job_id, token=token: service.heartbeat(job_id, token, iteration=steps),
                    adapters,
                )
            outcome, error = "done", None
        except Exception as exc:
            outcome, error = ended_by(exc)
        status = service.finish(job_id, token, outcome, error)
        print(f"job {job_id}: {status}", flush=True)
        deadline = time.monotonic() + idle_s
        claimed = None
        while claimed is None and time.monotonic() < deadline:
            claimed = service.claim(host, os.getpid(), kinds=INFERENCE_KINDS)
            if claimed is None:
                time.sleep(0.2)
        if claimed is None:
            return status
        job_id, token = claimed[0].id, claimed[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one claimed training job")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--token", required=True, help="the claim's lease token")
    parser.add_argument(
        "--idle-s", type=float, default=INFERENCE_IDLE_S, help="an inference process's wait for the next request"
    )
    args = parser.parse_args(argv)
    quiet_libraries()
    world = init_from_environment()
    database = Database(args.db_url)
    service = JobService(database, DataDir(args.data_dir))
    status = run_claimed_job(service, args.job_id, args.token, world=world, idle_s=args.idle_s)
    world.close()
    if world.is_main:
        print(f"job {args.job_id}: {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
