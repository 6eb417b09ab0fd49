"""Storage of V-GRPO Studio: the database and the file store under one data directory."""
