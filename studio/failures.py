"""Why a job failed, and whether running it again could help.

A failure that will recur (a config or data error, a model or reward that cannot load, out of memory, a
reward that cannot read its prompt, a bug) fails the job at once: running the same config again burns
the same minutes for the same error. Only failures from outside the job (the process was killed, the
lease was lost, a connection or a disk that hiccuped) are retried, after a backoff.
"""

from __future__ import annotations

import errno
import traceback
from dataclasses import dataclass

#: errno values of I/O errors that may pass on their own (a flaky network filesystem, a full disk
#: someone empties, a busy device)
TRANSIENT_ERRNOS = frozenset(
    {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ENOSPC, errno.ESTALE, errno.ETIMEDOUT, errno.ECONNRESET}
)
#: how much of the traceback a failed job keeps below its reason
TRACEBACK_CHARS = 4000
_OOM_MARKERS = ("out of memory", "can't allocate memory", "defaultcpuallocator")
#: how a collective reports that another process of the job died (gloo): the job is retried, as when its
#: own process is killed
_PEER_LOST_MARKERS = ("connection closed by peer", "connection reset by peer", "broken pipe")


@dataclass(frozen=True)
class Failure:
    reason: str  # one line, what a person reads first
    retry: bool  # whether running it again may succeed
    details: str = ""  # the end of the traceback

    def text(self) -> str:
        """The job's stored error: the reason on the first line, the traceback below."""
        return f"{self.reason}\n\n{self.details}" if self.details else self.reason


def classify(error: BaseException) -> Failure:
    """The failure `error` is, with its traceback (also printed to the job's log)."""
    traceback.print_exception(error)
    details = "".join(traceback.format_exception(error))[-TRACEBACK_CHARS:]
    message = _first_line(error)
    if is_out_of_memory(error):
        reason = (
            f"out of memory ({message}); lower rollout.batch_size, rollout.group_size, model.resolution or "
            "vgrpo.n_mc, or turn model.gradient_checkpointing on"
        )
        return Failure(reason, retry=False, details=details)
    if _transient(error):
        return Failure(f"transient {type(error).__name__}: {message}", retry=True, details=details)
    kind = "config or data error" if isinstance(error, ValueError | KeyError | LookupError) else "error"
    return Failure(f"{kind}: {type(error).__name__}: {message}", retry=False, details=details)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error).lower() for marker in _OOM_MARKERS)


def _transient(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | InterruptedError | BlockingIOError):
        return True
    import torch.distributed

    if isinstance(error, torch.distributed.DistError):  # a peer process or the rendezvous store was lost
        return True
    if isinstance(error, RuntimeError) and any(marker in str(error).lower() for marker in _PEER_LOST_MARKERS):
        return True
    if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
        return True
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return False
    return isinstance(error, OperationalError)  # the database was locked or its connection dropped


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
