"""Preference rewards: people's pairwise choices turned into a reward by a Bradley-Terry model on frozen
image (and prompt) features.

- `bradley_terry`  the model, its fit and its cross-validated pairwise accuracy
- `features`       feature extractors by name (`shapes-stats`, `clip:DIR`)
- `artifact`       a fitted model on disk (weights + card) and the reward that scores with it
- `selection`      which candidate pairs to show a labeller first
"""
