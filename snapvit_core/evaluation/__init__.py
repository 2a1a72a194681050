"""Evaluation: features, kNN and the linear probe, and the cost metrics of a plan or a model."""
