"""Write the four configs of this run: each method's preset with the overrides of the tuning probe
that won (`vgrpo bench tune --budget-minutes 3`, probe numbers as in the README's table):

    python bench/results/speed-6min-fair/configs.py OUT_DIR

The grid is centred on the learning rates the presets had when the tuning ran (`TUNED_AROUND`); the
presets have since taken the winners, so those rates are pinned here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from studio.bench.speed import method_configs
from studio.bench.tuning import TUNING_KNOBS, tuning_grid, with_lr_schedule, with_overrides
from trainer_core.config import dump_config

#: method -> the winning probe's index in its grid (learning rate outermost, then knob 1, then knob 2)
CHOSEN_PROBE = {"vgrpo": 3, "flow-grpo": 1, "mix-grpo": 2, "diffusion-nft": 1}
#: method -> its preset's learning rate when the tuning ran, the centre of its grid
TUNED_AROUND = {"vgrpo": 2e-3, "flow-grpo": 1e-3, "mix-grpo": 5e-4, "diffusion-nft": 2e-3}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for method, preset in method_configs(list(CHOSEN_PROBE)).items():
        base = with_overrides(with_lr_schedule(preset, "constant"), {"optimizer.learning_rate": TUNED_AROUND[method]})
        overrides = tuning_grid(base, TUNING_KNOBS[method])[CHOSEN_PROBE[method]]
        (out / f"{method}.yaml").write_text(dump_config(with_overrides(base, overrides)))
        print(method, overrides)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
