"""Iteration time of a preset with training passes fused (`lora.fused_lora`) and with peft's adapter apart.

Alternates the two (apart, fused, apart, fused) so that drift in the machine's speed falls on both:

    python bench/scripts/fused_lora_ab.py [--preset shapes-geneval] [--iterations 2]
"""

from __future__ import annotations

import argparse
import contextlib

import trainer_core.lora as lora
from studio.bench.throughput import throughput_benchmark
from trainer_core.config import load_preset

KEYS = ("rollout_s", "old_pass_s", "train_s", "total_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes-geneval")
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    config = load_preset(args.preset)
    fused = lora.fused_lora
    print("mode  " + "  ".join(KEYS))
    for mode in ("apart", "fused", "apart", "fused"):
        lora.fused_lora = fused if mode == "fused" else (lambda model: contextlib.nullcontext())
        mean = throughput_benchmark(config, iterations=args.iterations)["mean"]
        print(f"{mode} " + "  ".join(f"{mean[key]:.2f}" for key in KEYS), flush=True)  # type: ignore[index]


if __name__ == "__main__":
    main()
