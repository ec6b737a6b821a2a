"""Evaluation: held-out metrics, benchmark tasks, statistics, reports and plots."""
