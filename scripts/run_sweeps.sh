#!/usr/bin/env bash
# Run the four sweep axes of issue 19 — (d) surrogate size, (e) vocabulary overlap,
# (f) domain, (c) base size — then re-measure round 2's (a) strength and (b) alpha x lambda
# with the round-3 instrument, one after another, in the background, resumably.
#
#   scripts/run_sweeps.sh            # start (or resume) in the background; prints the log path
#   scripts/run_sweeps.sh --fg       # the same in the foreground
#   tail -f benchmarks/results/sweeps-<date>.log
#
# Each axis writes benchmarks/results/sweep-<axis>-cpu-2core-<date>/ (report.md, summary.md,
# figures, sweep.json with the per-run numbers). All four share one runs root (runs/sweeps,
# git-ignored: checkpoints, target stores, per-run eval.json/ood.json), so identical runs (the CE baselines, the 16x
# surrogate at alpha 0.05) train once, and the quickstart's cache ($LSAP_CACHE/quickstart)
# holds the regimes. Killed or rebooted: run the script again with the same LSAP_SWEEP_DATE
# (default: the date of the first start, kept in benchmarks/results/.sweeps-date), and
# finished runs and evaluations are reused. Estimated ~3.5-4 h of a 2-core CPU in all
# (per-axis estimates in each spec's header: src/lsap/configs/sweeps/*.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
mkdir -p "$results"
if [[ -z "${LSAP_SWEEP_DATE:-}" ]]; then
  [[ -f $results/.sweeps-date ]] || date -u +%F > "$results/.sweeps-date"
  LSAP_SWEEP_DATE=$(cat "$results/.sweeps-date")
fi
export LSAP_SWEEP_DATE
log=$results/sweeps-$LSAP_SWEEP_DATE.log
if [[ "${1:-}" != "--fg" ]]; then
  nohup "$0" --fg >>"$log" 2>&1 &
  echo "sweeps running in the background (pid $!): tail -f $log"
  exit 0
fi
lsap=(python -m lsap)
export PYTHONUNBUFFERED=1
for axis in surrogate-size overlap domain base-size strength alpha-lambda; do
  out=$results/sweep-$axis-cpu-2core-$LSAP_SWEEP_DATE
  echo "=== $(date -u +%FT%TZ) $axis -> $out"
  "${lsap[@]}" sweep "$axis" --out "$out" --runs-root runs/sweeps
done
echo "=== $(date -u +%FT%TZ) all axes done"
