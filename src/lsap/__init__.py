"""lsap — surrogate-assisted language-model pretraining."""

from lsap.errors import LsapError

__version__ = "0.1.0"
__all__ = ["LsapError", "__version__"]
