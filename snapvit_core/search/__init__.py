"""Stage 2, the evolutionary search: xNES over per-block multipliers, its CKA start and its checkpoints."""
