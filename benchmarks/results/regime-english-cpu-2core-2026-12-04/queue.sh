#!/bin/bash
# A worker of the general-English regime (issue 26 items 4-5): claims the next job of JOBS (a sweep spec
# for one seed) with an atomic mkdir under claims/, runs it, then scores that job's finished runs on the
# paper's tasks + Zorro (last checkpoint). Resumable: finished runs are skipped by the sweep, scored runs
# by bench; a killed worker's claim is released by `rm -r claims/<job>` (run.sh start does it for all).
# Two workers run side by side, one thread each (steadier than two threads on 2 shared cores).
cd /work/regime2
export PYTHONPATH=/work/regime2/src LSAP_CACHE=/work/regime-run/cache OMP_NUM_THREADS=1
export LSAP_ZORRO_DIR=/work/shared/benchmarks/zorro
JOBS="main-s0 main-s1 main-s2 ls-s0 ls-s1 ls-s2 main-s3 ls-s3 main-s4 ls-s4 p2-s0 p2-s1 p2-s2 p2-s3 p2-s4"
mkdir -p claims
retry() { for i in 1 2 3; do "$@" && return 0; echo "!! retry $i: $*"; sleep 30; done; return 1; }
bench() {  # $1 = sweep out dir
  for d in $(python -c "import json;[print(r['out_dir']) for r in json.load(open('$1/sweep.json'))['runs'] if r.get('status')=='done']"); do
    last=$(ls -d $d/checkpoints/step_* | tail -1)
    [ -f $last/benchmarks.json ] && continue
    date -u; echo "== bench $d"
    /usr/bin/time -f "%e s wall %U s user" python -m lsap eval "$d" --tasks paper,zorro --max-examples 200 --checkpoints last --no-loss 2>&1 | grep -E ": n=|wall|rror" | tail -12
  done
}
for J in $JOBS; do
  mkdir claims/$J 2>/dev/null || continue
  KIND=${J%-s*}; S=${J#*-s}
  date -u; echo "== $J (worker $$)"
  case $KIND in
    main) sed "s/__SEED__/$S/" regime.tmpl.yaml > spec-s$S.yaml; SPEC=spec-s$S.yaml; OUT=out/seed$S ;;
    ls) until EPS=$(python eps.py); do sleep 60; done; echo "   eps=$EPS"
        sed "s/__EPS__/$EPS/; s/__SEED__/$S/" ls.tmpl.yaml > spec-ls-s$S.yaml; SPEC=spec-ls-s$S.yaml; OUT=out-ls/seed$S ;;
    p2) sed "s/__SEED__/$S/" p2.tmpl.yaml > spec-p2-s$S.yaml; SPEC=spec-p2-s$S.yaml; OUT=out-p2/seed$S ;;
  esac
  retry /usr/bin/time -f "%e s wall %U s user" python -m lsap sweep $SPEC --out $OUT --runs-root out/runs || { rmdir claims/$J; exit 1; }
  bench $OUT
  touch claims/$J/done
done
date -u; echo "== worker $$ done"
