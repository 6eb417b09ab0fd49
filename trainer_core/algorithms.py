"""The RL algorithms by name: V-GRPO and the baselines it is measured against."""

from __future__ import annotations

from trainer_core.adapters.base import DenoiserAdapter
from trainer_core.config import TrainConfig
from trainer_core.rewards.base import RewardMix
from trainer_core.trainer import GroupTrainer, VGRPOTrainer


def make_trainer(adapter: DenoiserAdapter, rewards: RewardMix, config: TrainConfig) -> GroupTrainer:
    """The trainer for `config.algorithm` (validated by TrainConfig)."""
    if config.algorithm in ("flow-grpo", "mix-grpo"):
        from trainer_core.mdp_trainer import FlowGRPOTrainer

        return FlowGRPOTrainer(adapter, rewards, config)
    return VGRPOTrainer(adapter, rewards, config)
