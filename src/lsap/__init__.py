"""lsap — surrogate-assisted language-model pretraining."""

__version__ = "0.1.0"
