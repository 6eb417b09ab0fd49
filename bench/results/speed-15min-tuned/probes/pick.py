"""Which config each baseline trains from in the tuned run: its probe at half the preset's learning
rate (seed 0) or the preset (its seed-0 run in ../../speed-15min/), whichever has the higher mean
held-out accuracy over marks 1-10 (the area under the accuracy curve; a tie keeps the preset).

    python bench/results/speed-15min-tuned/probes/pick.py
"""

import json
import os
from pathlib import Path

HERE = Path(__file__).parent
CANDIDATES = {  # method: (probe name: its config .yaml and result -seed0.json, preset)
    "flow-grpo": ("flow-grpo-lr5e-4", "trainer_core/presets/shapes-geneval-flow-grpo.yaml"),
    "mix-grpo": ("mix-grpo-lr2.5e-4", "trainer_core/presets/shapes-geneval-mix-grpo.yaml"),
}


def mean_accuracy(snapshots: list[dict]) -> float:
    marks = [s["accuracy"] for s in snapshots if s["mark"] > 0]
    return sum(marks) / len(marks)


def main() -> None:
    preset_runs = json.loads((HERE.parent.parent / "speed-15min" / "speed.json").read_text())["methods"]
    flags = []
    for method, (probe, preset) in CANDIDATES.items():
        preset_run = next(r for r in preset_runs[method]["runs"] if r["seed"] == 0)
        preset_mean = mean_accuracy(preset_run["snapshots"])
        probe_mean = mean_accuracy(json.loads((HERE / f"{probe}-seed0.json").read_text())["snapshots"])
        pick = os.path.relpath(HERE.parent / f"{probe}.yaml") if probe_mean > preset_mean else preset
        print(f"{method}: preset {preset_mean:.4f}, probe {probe_mean:.4f} -> {pick}")
        flags.append(f"--config {method}={pick}")
    print(" ".join(flags))


if __name__ == "__main__":
    main()
