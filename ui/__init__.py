"""The Gradio user interface of V-GRPO Studio: one module per tab, talking only to `studio`."""
