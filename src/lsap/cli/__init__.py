"""The `lsap` command line: `main` dispatches to one module per command (`lsap.cli.<name>`)."""

from lsap.cli.main import main

__all__ = ["main"]
