"""`lsap.cli.main` under torchrun (or alone) with per-rank test faults, for tests/test_store_dist.py.

KILL_RANK=r KILL_AT_CALL=n   rank r SIGKILLs itself at its n-th surrogate batch (mid-chunk)
CHDIR_RANK<r>=DIR            rank r runs from DIR (relative paths resolve to other files:
                             a node that sees another surrogate or tokenizer)
"""

import os
import signal
import sys

rank = int(os.environ.get("RANK", "0"))
if os.environ.get("KILL_RANK") is not None and int(os.environ["KILL_RANK"]) == rank:
    import lsap.method.targets as targets

    _orig, _calls = targets.propose_targets, [0]

    def _dying(*a, **k):
        _calls[0] += 1
        if _calls[0] == int(os.environ["KILL_AT_CALL"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return _orig(*a, **k)

    targets.propose_targets = _dying
if os.environ.get(f"CHDIR_RANK{rank}"):
    os.chdir(os.environ[f"CHDIR_RANK{rank}"])

from lsap.cli.main import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
