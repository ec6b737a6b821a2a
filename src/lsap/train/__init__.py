"""Pretraining: the training loop, models, checkpoints, distributed setup, configs, FLOPs and loggers."""
