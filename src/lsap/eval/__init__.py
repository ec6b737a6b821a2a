"""Evaluation: held-out metrics, benchmark tasks and statistics."""
