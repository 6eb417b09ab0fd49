"""The RL algorithms by name: V-GRPO and the baselines it is measured against.

The one list of them: the config validates `algorithm` against it, the studio offers it, and
`make_trainer` builds the named trainer (imported only then: this module is imported by the config).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer_core.adapters.base import DenoiserAdapter
    from trainer_core.config import TrainConfig
    from trainer_core.rewards.base import RewardMix
    from trainer_core.trainer import GroupTrainer

#: algorithm -> "module:class" of the trainer that runs it
TRAINERS = {
    "vgrpo": "trainer_core.trainer:VGRPOTrainer",
    "flow-grpo": "trainer_core.mdp_trainer:FlowGRPOTrainer",
    "mix-grpo": "trainer_core.mdp_trainer:FlowGRPOTrainer",
    "diffusion-nft": "trainer_core.nft_trainer:DiffusionNFTTrainer",
    "naive-elbo": "trainer_core.trainer:VGRPOTrainer",  # V-GRPO with its variance reductions off
}
ALGORITHMS = tuple(TRAINERS)


def make_trainer(adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> GroupTrainer:
    """The trainer for `config.algorithm` (validated by TrainConfig)."""
    module, name = TRAINERS[config.algorithm].split(":")
    return getattr(import_module(module), name)(adapter, rewards, config)
