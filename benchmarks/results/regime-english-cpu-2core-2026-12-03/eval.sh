#!/bin/bash
# Evaluates every finished run of both sweeps on the paper's tasks + Zorro (last checkpoint), until
# run.sh has finished and every run is evaluated. Resumable: rerun it (skips runs with benchmarks.json).
# nohup nice -n 4 bash /work/regime-run/eval.sh >> /work/regime-run/eval.log 2>&1 &
cd /work/regime-run
export PYTHONPATH=/work/regime-run/src-eval LSAP_ZORRO_DIR=/work/shared/benchmarks/zorro OMP_NUM_THREADS=2
N=${MAX_EXAMPLES:-200}
while true; do
  todo=$(python - <<'PY'
import json
from pathlib import Path
for p in sorted(Path(".").glob("out*/seed*/sweep.json")):
    for r in json.loads(p.read_text())["runs"]:
        evs = sorted(Path(r["out_dir"]).glob("checkpoints/*/eval.json"))
        if r.get("status") == "done" and evs and not (evs[-1].parent / "benchmarks.json").is_file():
            print(r["out_dir"])
PY
)
  for d in $todo; do
    date -u; echo "== eval $d"
    /usr/bin/time -v python -m lsap eval "$d" --tasks paper,zorro --max-examples $N --checkpoints last 2>&1 | tail -30
  done
  if [ -z "$todo" ] && grep -q "== done" run.log; then echo "== all evaluated"; date -u; break; fi
  sleep 60
done
