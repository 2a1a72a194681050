"""The elastic engine: backbones and their adapter, reordering by score, cutting to any sparsity, correction."""
