"""Multi-run experiments built on train/eval: sweeps, regimes, the quickstart and preflight."""
