"""The service layer of V-GRPO Studio: the only place that knows both jobs and training."""
