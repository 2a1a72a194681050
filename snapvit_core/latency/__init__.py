"""Latency: the model that predicts a plan's latency, its calibration and portable tables."""
