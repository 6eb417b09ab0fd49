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
import os
import socket
import sys
import threading
import traceback

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import JobStatus
from studio.jobs import JobService
from studio.runs import RunDirectory
from studio.training import run_training
from trainer_core.config import TrainConfig, from_dict
from trainer_core.distributed import World, init_from_environment

HEARTBEAT_S = 2.0


def run_claimed_job(
    service: JobService, job_id: int, token: str, heartbeat_s: float = HEARTBEAT_S, world: World | None = None
) -> str:
    """Train the job to its end or to a stop request; returns the status it ended in (rank 0), or "rank"
    on the other ranks of a data-parallel job."""
    world = world or World()
    job = service.get(job_id)
    if not world.is_main:
        run_dir = service.data_dir.run_dir(job_id)
        resume = bool(world.broadcast(None))
        run_training(from_dict(TrainConfig, job.config), run_dir, resume=resume, data_dir=service.data_dir)
        return "rank"
    service.set_worker_process(job_id, token, socket.gethostname(), os.getpid())
    stop = threading.Event()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(heartbeat_s):
            status = service.heartbeat(job_id, token)
            if status in (JobStatus.CANCELLING, JobStatus.PAUSING, "lost"):
                stop.set()

    def on_iteration(metrics: dict[str, float]) -> None:
        if not service.record_iteration(job_id, token, metrics):
            stop.set()  # another worker owns the job now: write nothing more

    heart = threading.Thread(target=beat, name=f"heartbeat-{job_id}", daemon=True)
    heart.start()
    try:
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
        outcome, error = "error", "".join(traceback.format_exception(exc))[-4000:]
        traceback.print_exc()
    finally:
        done.set()
        heart.join()
    return service.finish(job_id, token, outcome, error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one claimed training job")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--token", required=True, help="the claim's lease token")
    args = parser.parse_args(argv)
    world = init_from_environment()
    database = Database(args.db_url)
    status = run_claimed_job(JobService(database, DataDir(args.data_dir)), args.job_id, args.token, world=world)
    if world.is_main:
        print(f"job {args.job_id}: {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
