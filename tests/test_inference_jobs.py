"""Compare and labelling images made by workers through the queue: the web process loads no model, a
person waiting reads progress, one warm process serves a labelling session, and with no worker running
the request is refused at once instead of hanging."""

import time

import numpy as np
import pytest

import studio.compare
import trainer_core.adapters
from storage.data_dir import DataDir
from storage.models import JobStatus
from studio.api import Studio
from studio.inference import NoWorkerError
from studio.labeling import LabelSource
from studio.scheduler import JobScheduler

PROMPTS = ["a red circle", "two blue squares"]


@pytest.fixture
def home(tmp_path) -> DataDir:
    return DataDir(tmp_path / "home").create()


def no_models_here(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the web process loaded a model")

    monkeypatch.setattr(trainer_core.adapters, "load_adapter", refuse)
    monkeypatch.setattr(studio.compare, "load_adapter", refuse)


@pytest.mark.slow
def test_compare_and_labelling_run_in_a_worker_with_progress(home, monkeypatch):
    inline = Studio(home).compare(["base", "base"], PROMPTS, [0, 1])  # the same request, in this process
    web = Studio(home, inference="worker")
    scheduler = JobScheduler(web.jobs.db.url, home, poll_s=0.3, inference_idle_s=30)
    spawned = []
    spawn = scheduler._spawn
    monkeypatch.setattr(scheduler, "_spawn", lambda *args: spawned.append(args) or spawn(*args))
    scheduler.start()
    no_models_here(monkeypatch)
    try:
        job_id = web.start_compare(["base", "base"], PROMPTS, [0, 1])
        seen = []
        while (text := web.inference_progress(job_id)) is not None:
            seen.append(text)
            time.sleep(0.2)
        result = web.compare_result(job_id)
        assert any(t.startswith(("waiting for a worker", "generating: checkpoint")) for t in seen)
        assert result.labels == inline.labels and result.scores == inline.scores
        for ours, theirs in zip(result.images, inline.images, strict=True):
            np.testing.assert_array_equal(ours, theirs)
        assert not (home.run_dir(job_id) / "images.npz").exists()  # read once, then removed

        session_id = web.start_labelling(LabelSource("seeds", prompts=tuple(PROMPTS), seed=3))
        for _ in range(3):
            pair = web.label_pair(session_id)
            assert pair.a.image.shape == (32, 32, 3)
            web.label(session_id, "a")
        web.close_labelling(session_id)
        jobs = [web.jobs.get(view.id) for view in web.jobs.list_jobs(kind=None)]
        generated = [j for j in jobs if j.kind == "generate"]
        assert generated and all(j.status == JobStatus.DONE for j in generated)
        assert len(spawned) == 1  # one warm process served the compare and every batch of the session
        assert web.jobs.list_jobs() == []  # the Jobs tab lists training jobs only
    finally:
        scheduler.shutdown(stop_jobs=True)


def test_without_a_worker_the_request_is_refused_and_cancelled(home, monkeypatch):
    web = Studio(home, inference="worker")
    no_models_here(monkeypatch)
    job_id = web.start_compare(["base", "base"], PROMPTS, [0])
    with pytest.raises(NoWorkerError, match="no worker is running to generate images"):
        web.inference_progress(job_id)
    assert web.jobs.get(job_id).status == JobStatus.CANCELLED
    with pytest.raises(ValueError, match="checkpoints: pick 2 to 4, got 1"):
        web.start_compare(["base"], PROMPTS, [0])
