"""Which failures are retried: only those that may pass on their own."""

import errno

import pytest
import torch

from studio.failures import classify
from studio.scheduler import process_ended
from trainer_core.config import ConfigError


def raised(action) -> BaseException:
    try:
        action()
    except BaseException as error:
        return error
    raise AssertionError("nothing was raised")


def test_out_of_memory_fails_at_once_with_what_to_lower():
    error = raised(lambda: torch.empty(2**62, dtype=torch.uint8))  # the CPU allocator's own refusal
    failure = classify(error)
    assert not failure.retry
    assert failure.reason.startswith("out of memory (")
    assert "rollout.batch_size" in failure.reason and "\n" not in failure.reason
    assert failure.text().startswith(failure.reason + "\n\nTraceback")
    assert not classify(MemoryError()).retry


@pytest.mark.parametrize(
    ("error", "retry", "reason"),
    [
        (ConfigError("rollout.prompts: gone"), False, "config or data error: ConfigError: rollout.prompts: gone"),
        (FileNotFoundError(errno.ENOENT, "No such file", "x.txt"), False, "error: FileNotFoundError:"),
        (KeyError("unet"), False, "config or data error: KeyError: 'unet'"),
        (RuntimeError("shape mismatch\nmore"), False, "error: RuntimeError: shape mismatch"),
        (OSError(errno.EIO, "Input/output error"), True, "transient OSError: [Errno 5] Input/output error"),
        (OSError(errno.ENOSPC, "No space left on device"), True, "transient OSError"),
        (ConnectionResetError("peer"), True, "transient ConnectionResetError: peer"),
        (TimeoutError("slow disk"), True, "transient TimeoutError"),
        (RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:5000"), True, "transient"),
        (torch.distributed.DistNetworkError("store lost"), True, "transient DistNetworkError: store lost"),
    ],
)
def test_only_failures_that_may_pass_are_retried(error, retry, reason):
    def fail() -> None:
        raise error

    failure = classify(raised(fail))
    assert failure.retry is retry
    assert failure.reason.startswith(reason) and "\n" not in failure.reason


def test_a_lost_job_process_says_how_it_ended():
    assert process_ended(-9) == (
        "job process killed by SIGKILL (by a person, or by the kernel when the machine ran out of memory)"
    )
    assert process_ended(-15) == "job process killed by SIGTERM"
    assert process_ended(3) == "job process exited with code 3 without finishing its job"
