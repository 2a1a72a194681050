"""Stage 1, importance scores: the label-free SnapViT method and its baselines, computed or read from files."""
