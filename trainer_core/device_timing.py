"""Time spent by the device in chosen intervals, without stopping it to read a clock.

On a GPU the host queues kernels and moves on, so host clocks around a model pass measure the
launch, not the pass, unless every interval ends in `torch.cuda.synchronize()`, which also stops
the host's next work (reward scoring, say) from overlapping the device's. CUDA events are recorded
into the stream instead and read once, when the total is taken. Elsewhere work is synchronous and
`time.perf_counter` is the device's clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch


class DeviceIntervals:
    """Adds up the device time of intervals opened by `start` and closed by `stop` (or `interval()`).

    Intervals must not nest; `take()` returns the seconds accumulated since the last `take()`.
    """

    def __init__(self, device: torch.device) -> None:
        self.on_cuda = device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._open: torch.cuda.Event | float | None = None
        self._seconds = 0.0
        self.count = 0  # intervals closed since the last take()

    def start(self) -> None:
        if self.on_cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._open = event
        else:
            self._open = time.perf_counter()

    def stop(self) -> None:
        opened, self._open = self._open, None
        if opened is None:
            raise RuntimeError("DeviceIntervals.stop() without a start()")
        self.count += 1
        if isinstance(opened, float):
            self._seconds += time.perf_counter() - opened
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._events.append((opened, event))

    @contextlib.contextmanager
    def interval(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    def take(self) -> float:
        """Seconds in the intervals closed since the last call (on CUDA, waits for the last one to run)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(begin.elapsed_time(end) for begin, end in self._events) / 1000
            self._events.clear()
        seconds, self._seconds, self.count = self._seconds, 0.0, 0
        return seconds
