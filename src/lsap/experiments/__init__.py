"""Multi-run experiments built on train/eval: sweeps, regimes, the quickstart, preflight, reports, plots and the Table-1 analysis."""
