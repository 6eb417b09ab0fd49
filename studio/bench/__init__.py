"""Benchmarks behind `vgrpo bench ...`: each writes JSON and prints a table; none is a test.

- `sampling`   images per second of deterministic sampling per solver
- `speed`      every method under one wall-clock budget: held-out accuracy vs time / steps / NFE
- `ablation`   V-GRPO's knobs one at a time: final accuracy and within-group surrogate CV
- `throughput` one iteration's time split, images per second, peak memory
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from trainer_core.files import write_atomic


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def format_rows(rows: list[dict[str, object]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(report: dict[str, object], out: Path) -> None:
    """Write `out` whole or not at all: an interrupted write leaves the previous report intact."""
    write_atomic(out, json.dumps(report, indent=2))
