"""eps for the label-smoothing arm: LSAP a0.05 l1's average auxiliary mass share V/(N+V)
(mean aux_per_token a over the logged steps of the first finished seed's run; eps = a/(1+a)).
Written once (atomically) to eps.json; later calls print the frozen value."""
import glob
import json
import os
import sys
from pathlib import Path

if Path("eps.json").is_file():
    print(round(json.loads(Path("eps.json").read_text())["eps"], 4))
    sys.exit(0)
for f in sorted(glob.glob("out/seed*/sweep.json")):
    for r in json.loads(Path(f).read_text())["runs"]:
        if not r.get("setting", "").startswith("lsap-a0.05-lam1.0") or r.get("status") != "done":
            continue
        m = Path(r["out_dir"]) / "metrics.jsonl"
        rows = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
        vals = [x["aux_per_token"] for x in rows if "aux_per_token" in x]
        if not vals:
            continue
        a = sum(vals) / len(vals)
        out = {"aux_per_token": a, "eps": a / (1 + a), "steps": len(vals), "run": r["out_dir"]}
        Path("eps.json.tmp").write_text(json.dumps(out, indent=1))
        os.replace("eps.json.tmp", "eps.json")
        print(round(out["eps"], 4))
        sys.exit(0)
sys.exit("no finished LSAP a0.05 l1 run with aux_per_token logged yet")
