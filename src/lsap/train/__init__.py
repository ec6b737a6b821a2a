"""Pretraining: the training loop, checkpoints and experiment loggers."""
