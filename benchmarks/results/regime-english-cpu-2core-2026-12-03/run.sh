#!/bin/bash
# Resumable: rerun `nohup nice -n 2 bash /work/regime-run/run.sh >> /work/regime-run/run.log 2>&1 &`
cd /work/regime-run
export PYTHONPATH=/work/regime-run/src LSAP_CACHE=/work/regime-run/cache OMP_NUM_THREADS=2
date -u; echo "== sweep 1 (CE, LSAP x2, prob-KD)"
/usr/bin/time -v python -m lsap sweep regime-english.yaml --out out --runs-root out/runs 2>&1
EPS=$(python eps.py) || exit 1
echo "== eps=$EPS"; sed "s/__EPS__/$EPS/" regime-english-ls.tmpl.yaml > regime-english-ls.yaml
/usr/bin/time -v python -m lsap sweep regime-english-ls.yaml --out out-ls --runs-root out/runs 2>&1
date -u; echo "== done"
