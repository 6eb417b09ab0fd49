"""V-GRPO and its world, as a library: models, samplers, rewards, no databases, no UI."""
