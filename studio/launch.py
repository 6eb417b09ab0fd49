"""Starting a job's processes: one, or N data-parallel ranks under torchrun.

torchrun (`torch.distributed.run`) gives each rank its RANK, WORLD_SIZE, LOCAL_RANK and a rendezvous
(`--standalone`: a free local port, so several jobs can run side by side), and when one rank dies it
stops the others and exits non-zero, so the job ends as one unit and is retried as one.
"""

from __future__ import annotations

import os
import sys


def process_command(module: str, arguments: list[str], devices: int = 1) -> list[str]:
    """The command line that runs `python -m module arguments` as `devices` processes."""
    if devices <= 1:
        return [sys.executable, "-m", module, *arguments]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={devices}",
        "--max-restarts=0",
        "-m",
        module,
        *arguments,
    ]


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1
