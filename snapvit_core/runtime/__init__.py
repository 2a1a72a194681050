"""Running work: background jobs, cancellation and torchrun."""
