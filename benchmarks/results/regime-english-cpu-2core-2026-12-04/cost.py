"""CPU cost of the regime: user seconds of every finished `/usr/bin/time` line in the workers' logs
(sweeps and benchmark evals), plus the surrogate pretraining and the first store build, which ran
inside a sweep that was restarted (their wall seconds from the log, one thread)."""
import re
from pathlib import Path

user = wall = 0.0
n = 0
for f in ("w1.log", "w2.log", "manual-bench.log"):
    for m in re.finditer(r"([\d.]+) s wall ([\d.]+) s user", Path(f).read_text()):
        wall += float(m.group(1)); user += float(m.group(2)); n += 1
surrogate = 984.0  # "surrogate: 1562 steps ... (984s" in w1.log
store = 7 * 60.0  # 02:52:24 → ~02:59 (store-68a2d7dcdb, 20 chunks), w1.log timestamps
total = user + surrogate + store
txt = (f"{n} timed commands: {user:,.0f} CPU-s user ({wall:,.0f} s wall, two workers side by side); "
       f"+ surrogate pretraining {surrogate:.0f} s + first store build ~{store:.0f} s (one thread): "
       f"total ≈ {total/3600:.2f} CPU-hours")
Path("cost.txt").write_text(txt + "\n")
print(txt)
