"""The built-in shapes world: grammar, renderer, detector, scores, prompt sets, base model."""
