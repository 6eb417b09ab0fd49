"""What the studio's processes print: their own progress, not every library's.

Library loading bars and backend notices would bury a job's progress in its log, and APScheduler logs
every tick at INFO; `--log-level` (default warning) sets how much of the rest gets through.
"""

from __future__ import annotations

import logging

LEVELS = ("debug", "info", "warning", "error")


def quiet_libraries() -> None:
    """No loading bars or notices from diffusers and transformers."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def configure(level: str = "warning") -> None:
    """Log records at `level` and above, as `time name: message`."""
    if level not in LEVELS:
        raise ValueError(f"--log-level: must be one of {', '.join(LEVELS)}, got {level!r}")
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s: %(message)s", force=True)
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
