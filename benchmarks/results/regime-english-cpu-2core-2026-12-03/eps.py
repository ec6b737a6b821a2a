"""ε for the label-smoothing arm: LSAP α0.05 λ1's average auxiliary mass share V/(N+V)
(mean aux_per_token a over its logged steps, all finished seeds; ε = a/(1+a))."""
import json, sys
from pathlib import Path
import glob
runs = []
for f in sorted(glob.glob("out/seed*/sweep.json")):
    sw = json.loads(Path(f).read_text())
    runs += sw["runs"]

vals = []
for r in runs:
    if r.get("setting") != "lsap-a0.05-lam1.0":
        continue
    d = Path(r["out_dir"])
    m = d / "metrics.jsonl"
    if m.exists():
        vals += [json.loads(l)["aux_per_token"] for l in m.read_text().splitlines()
                 if l.strip() and "aux_per_token" in json.loads(l)]
if not vals:
    sys.exit("no aux_per_token logged yet")
a = sum(vals) / len(vals)
eps = a / (1 + a)
Path("eps.json").write_text(json.dumps({"aux_per_token": a, "eps": eps, "steps": len(vals)}, indent=1))
print(f"{eps:.4f}")
