"""The job scheduler: claims queued jobs and runs each in its own process.

An APScheduler (3.x) background job ticks every `poll_s` seconds: it requeues jobs whose worker
stopped heartbeating (on any machine sharing the database), notices its own job processes that
died without finishing their job (requeued at once rather than after the heartbeat timeout), and
claims queued jobs while fewer than `max_concurrent_jobs` of its processes run.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

from storage.data_dir import DataDir
from storage.db import Database
from studio.jobs import JobService

log = logging.getLogger(__name__)


@dataclass
class _Running:
    process: subprocess.Popen
    token: str


class JobScheduler:
    def __init__(
        self,
        db_url: str,
        data_dir: DataDir,
        max_concurrent_jobs: int = 1,
        poll_s: float = 1.0,
        stale_after_s: float = 30.0,
    ) -> None:
        if max_concurrent_jobs < 1:
            raise ValueError(f"max_concurrent_jobs: must be at least 1, got {max_concurrent_jobs}")
        self.db_url, self.data_dir = db_url, data_dir
        self.service = JobService(Database(db_url), data_dir)
        self.max_concurrent_jobs = max_concurrent_jobs
        self.poll_s, self.stale_after_s = poll_s, stale_after_s
        self.running: dict[int, _Running] = {}
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None

    def tick(self) -> None:
        """One round: requeue stale jobs, reap finished processes, start new ones."""
        with self._lock:
            self.service.requeue_stale(self.stale_after_s)
            for job_id, running in list(self.running.items()):
                code = running.process.poll()
                if code is None:
                    continue
                del self.running[job_id]
                # A process that ended without finishing its job (killed, crashed): requeue now.
                status = self.service.finish(job_id, running.token, "error", f"job process exited with code {code}")
                if status != "lost":
                    log.warning("job %s: process exited with code %s; job is now %s", job_id, code, status)
            while len(self.running) < self.max_concurrent_jobs:
                claimed = self.service.claim(self.host)
                if claimed is None:
                    break
                job, token = claimed
                self.running[job.id] = _Running(self._spawn(job.id, token), token)

    def _spawn(self, job_id: int, token: str) -> subprocess.Popen:
        run_dir = self.data_dir.run_dir(job_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(run_dir / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        command = [
            sys.executable,
            "-m",
            "studio.job_process",
            "--db-url",
            self.db_url,
            "--data-dir",
            str(self.data_dir.root),
            "--job-id",
            str(job_id),
            "--token",
            token,
        ]
        try:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, env=_child_env()
            )
        finally:
            log_file.close()
        self.service.set_worker_process(job_id, token, self.host, process.pid)
        return process

    def start(self) -> JobScheduler:
        """Tick in the background until `shutdown()`."""
        self._scheduler = BackgroundScheduler()
        self._scheduler.add_job(self.tick, "interval", seconds=self.poll_s, max_instances=1, coalesce=True)
        self._scheduler.start()
        return self

    def run_forever(self) -> None:
        """Tick in the foreground (the `vgrpo worker` command)."""
        while True:
            self.tick()
            time.sleep(self.poll_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Until no job process of this scheduler runs and nothing is queued (tests, scripts)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.tick()
            if not self.running and not self.service.list_jobs(limit=1, status="queued"):
                return True
            time.sleep(self.poll_s)
        return False

    def shutdown(self, stop_jobs: bool = False) -> None:
        """Stop ticking. Job processes keep running (their jobs stay safe) unless `stop_jobs`."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if stop_jobs:
            for running in self.running.values():
                running.process.kill()
                running.process.wait()
            self.tick()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
