"""The job scheduler: claims queued jobs that fit its free devices and runs each in its own process(es).

An APScheduler (3.x) background job ticks every `poll_s` seconds: it requeues jobs whose worker
stopped heartbeating (on any machine sharing the database), notices its own job processes that
died without finishing their job (requeued at once rather than after the heartbeat timeout), says in
the database that it lives and what it offers, and claims queued jobs while it has free devices (and
runs fewer than `max_concurrent_jobs`). A job of `resources.devices: N` takes N free devices and runs as
N data-parallel processes under torchrun, seeing only its own GPUs; several workers on several hosts
sharing one database each claim only what fits their own devices.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import Job
from studio.devices import DevicePool, device_memory, parse_devices, visible_devices
from studio.inference import INFERENCE_KINDS
from studio.jobs import RETRY_BACKOFF_S, JobService
from studio.launch import process_command

log = logging.getLogger(__name__)
#: how often a worker says again that it lives when nothing changed (submit counts it live for 60 s)
REGISTER_EVERY_S = 10.0


@dataclass
class _Running:
    process: subprocess.Popen
    token: str
    devices: list[str]
    pool: DevicePool  # the one its devices go back to


class JobScheduler:
    def __init__(
        self,
        db_url: str,
        data_dir: DataDir,
        max_concurrent_jobs: int | None = None,
        poll_s: float = 1.0,
        stale_after_s: float = 30.0,
        devices: list[str] | None = None,
        jobs_per_device: int = 1,
        inference_idle_s: float = 60.0,
        retry_backoff_s: float = RETRY_BACKOFF_S,
    ) -> None:
        """`devices`: what `parse_devices` returns (default: every visible GPU, else one CPU slot per
        `max_concurrent_jobs`); `max_concurrent_jobs`: a cap on jobs besides the devices (none);
        `inference_idle_s`: how long an inference process keeps its models loaded waiting for the next request;
        `retry_backoff_s`: the first wait before a job whose process was lost runs again (it doubles)."""
        if max_concurrent_jobs is not None and max_concurrent_jobs < 1:
            raise ValueError(f"max_concurrent_jobs: must be at least 1, got {max_concurrent_jobs}")
        if devices is None:
            devices = parse_devices(None)
            if devices == ["cpu:0"] and max_concurrent_jobs:
                devices = parse_devices(f"cpu:{max_concurrent_jobs}")
        self.db_url, self.data_dir = db_url, data_dir
        self.service = JobService(Database(db_url), data_dir, retry_backoff_s)
        self.max_concurrent_jobs = max_concurrent_jobs or len(devices) * jobs_per_device
        self.pool = DevicePool(devices, jobs_per_device)
        self.memory = device_memory(devices, jobs_per_device)  # what each job may use per device
        # inference jobs (Compare, labelling) run beside training, one at a time per device
        self.inference_pool = DevicePool(devices, 1)
        self.poll_s, self.stale_after_s, self.inference_idle_s = poll_s, stale_after_s, inference_idle_s
        self.running: dict[int, _Running] = {}
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._registered: tuple[float, int] | None = None  # (when, free devices) last written
        self._lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None

    def tick(self) -> None:
        """One round: requeue stale jobs, reap finished processes, start new ones."""
        with self._lock:
            self.service.requeue_stale(self.stale_after_s)
            self._reap()
            while self.inference_pool.free():
                claimed = self.service.claim(self.host, kinds=INFERENCE_KINDS)
                if claimed is None:
                    break
                self._start(*claimed, self.inference_pool)
            while self._training() < self.max_concurrent_jobs and self.pool.free():
                claimed = self.service.claim(self.host, max_devices=self.pool.free(), kinds=("train",))
                if claimed is None:
                    break
                self._start(*claimed, self.pool)
            self._register()

    def _reap(self) -> None:
        """Forget the job processes that ended; a job one of them did not finish is retried after a backoff."""
        for job_id, running in list(self.running.items()):
            code = running.process.poll()
            if code is None:
                continue
            del self.running[job_id]
            running.pool.give_back(running.devices)
            status = self.service.finish(job_id, running.token, "error", process_ended(code))
            if status != "lost":
                log.warning("job %s: process exited with code %s; job is now %s", job_id, code, status)

    def _training(self) -> int:
        return sum(running.pool is self.pool for running in self.running.values())

    def _start(self, job: Job, token: str, pool: DevicePool) -> None:
        devices = pool.take(job.devices)
        self.running[job.id] = _Running(self._spawn(job.id, token, devices), token, devices, pool)

    def _register(self) -> None:
        """Say in the database that this worker lives and what it offers (submit checks job sizes on it):
        when the offer changed, else every REGISTER_EVERY_S, not at every tick."""
        free, now = self.pool.free(), time.monotonic()
        last = self._registered
        if last is not None and last[1] == free and now - last[0] < REGISTER_EVERY_S:
            return
        self.service.register_worker(
            self.worker_id, self.host, os.getpid(), self.pool.devices, self.pool.jobs_per_device, free, self.memory
        )
        self._registered = (now, free)

    def _spawn(self, job_id: int, token: str, devices: list[str]) -> subprocess.Popen:
        run_dir = self.data_dir.run_dir(job_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(run_dir / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        arguments = ["--db-url", self.db_url, "--data-dir", str(self.data_dir.root), "--job-id", str(job_id)]
        arguments += ["--token", token, "--idle-s", str(self.inference_idle_s)]
        command = process_command("studio.job_process", arguments, len(devices))
        env = _child_env() | {"CUDA_VISIBLE_DEVICES": visible_devices(devices)}
        try:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        finally:
            log_file.close()
        self.service.set_worker_process(job_id, token, self.host, process.pid, devices)
        return process

    def start(self) -> JobScheduler:
        """Tick in the background until `shutdown()`."""
        self._register()
        self._scheduler = BackgroundScheduler()
        self._scheduler.add_job(self.tick, "interval", seconds=self.poll_s, max_instances=1, coalesce=True)
        self._scheduler.start()
        return self

    def run_forever(self) -> None:
        """Tick in the foreground (the `vgrpo worker` command) until SIGINT or SIGTERM, which end it between
        ticks: an interrupt inside a database transaction would leave its row locked against the shutdown."""
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.is_set():
            self.tick()
            stop.wait(self.poll_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Until no job process of this scheduler runs and nothing is queued (tests, scripts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.tick()
            if not self.running and not self.service.list_jobs(limit=1, status="queued", kind=None):
                return True
            time.sleep(self.poll_s)
        return False

    def shutdown(self, stop_jobs: bool = False) -> None:
        """Stop ticking. Job processes keep running (their jobs stay safe) unless `stop_jobs`."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if stop_jobs:
            with self._lock:
                for running in self.running.values():
                    os.killpg(running.process.pid, signal.SIGKILL)  # the job's ranks too
                    running.process.wait()
                self._reap()  # their jobs back to the queue; nothing new is claimed
        self.service.remove_worker(self.worker_id)


def process_ended(code: int) -> str:
    """The error of a job whose process ended without finishing it (one line: the job is retried)."""
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        cause = " (by a person, or by the kernel when the machine ran out of memory)" if -code == signal.SIGKILL else ""
        return f"job process killed by {name}{cause}"
    return f"job process exited with code {code} without finishing its job"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
