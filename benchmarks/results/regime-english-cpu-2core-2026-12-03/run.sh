#!/bin/bash
# Resumable (finished runs are skipped): nohup nice -n 2 bash /work/regime-run/run.sh >> /work/regime-run/run.log 2>&1 &
# Seed-major: each seed's five arms (CE, LSAP a0.05 l1, LSAP a0.01 l0.3, prob-KD, label smoothing) finish
# before the next seed starts. eps (label smoothing) is measured once from seed 0's LSAP a0.05 l1 run.
cd /work/regime-run
export PYTHONPATH=/work/regime-run/src LSAP_CACHE=/work/regime-run/cache OMP_NUM_THREADS=2
for S in 0 1 2 3 4; do
  date -u; echo "== seed $S: CE, LSAP x2, prob-KD"
  sed "s/__SEED__/$S/" regime-english.tmpl.yaml > spec-s$S.yaml
  /usr/bin/time -v python -m lsap sweep spec-s$S.yaml --out out/seed$S --runs-root out/runs 2>&1 || exit 1
  [ -f eps.json ] || python eps.py || exit 1
  EPS=$(python -c "import json;print(round(json.load(open('eps.json'))['eps'],4))")
  echo "== seed $S: label smoothing eps=$EPS"
  sed "s/__EPS__/$EPS/; s/__SEED__/$S/" regime-english-ls.tmpl.yaml > spec-ls-s$S.yaml
  /usr/bin/time -v python -m lsap sweep spec-ls-s$S.yaml --out out-ls/seed$S --runs-root out/runs 2>&1 || exit 1
done
date -u; echo "== done"
