"""Issue 28's case list, re-run: each bad input it names, as a real command on a tiny world.

    python scripts/attack_cases.py [--work DIR] [--out CASES.md] [-k SUBSTRING]

Builds a tiny world in --work (a temporary directory by default): two BPE tokenizers trained
on pydoc's topics, a random one-layer surrogate, token shards, a 6-step CE run with pruned
checkpoints and a target store. Then every case runs as its own process (`python -m lsap …`,
the OLMo-core example, `python -c`), and one line per case is printed:

    command → exit code → the line it printed   [good | NOT GOOD: why]

"good" means what the issue asks: a refusal is exit 2 with one line naming the problem and
no traceback; Ctrl-C is exit 130 with one line; an accepted input exits 0 and does the right
thing (checked by the case). Exit status 1 if any case is not good. About 5 minutes on two
CPU cores. The unit tests of the same cases live in tests/test_faults.py and the CLI tests;
this script is the end-to-end re-run the issue's "Must show" asks for.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
}
PY = sys.executable


@dataclass
class Case:
    section: str
    name: str
    argv: list[str]  # a full command line (formatted with the world's paths)
    rc: tuple[int, ...] = (2,)
    needles: tuple[str, ...] = ()  # each must be in the printed line
    check: Callable[[subprocess.CompletedProcess], str] | None = None  # '' when good
    sigint_when: Callable[[], bool] | None = None  # Ctrl-C once this holds
    setup: Callable[[], None] | None = None
    env: dict = field(default_factory=dict)
    one_line: bool = True  # a refusal prints exactly one stderr line


def lsap(*a) -> list[str]:
    return [PY, "-m", "lsap", *map(str, a)]


def train_args(w: dict, out, *extra) -> list[str]:
    return [
        f"data.dir={w['data']}",
        f"out_dir={out}",
        "model.preset=olmo2-tiny",
        "data.seq_len=32",
        "train.batch_size=4",
        "train.micro_batch_size=2",
        "train.max_steps=6",
        "train.log_every=1",
        "optim.warmup_steps=2",
        "train.eval_batches=2",
        *map(str, extra),
    ]


# ------------------------------------------------------------------------------ the world
def build_world(root: Path) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from pydoc_data.topics import topics

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsap.data.shards import prepare
    from lsap.data.tokenizer import train_bpe

    w = {"root": root, "base_tok": root / "base_tok", "surrogate": root / "surrogate"}
    if not (root / "world.done").exists():
        texts = list(topics.values())
        train_bpe(texts, 600, w["base_tok"])
        surr = train_bpe([t.lower() for t in texts], 700, w["surrogate"], split_digits=True)
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=len(surr),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            initializer_range=0.5,
        )
        LlamaForCausalLM(cfg).save_pretrained(w["surrogate"])
        prepare(
            str(w["base_tok"]),
            "pydoc-topics",
            root / "data",
            val_fraction=0.1,
            max_tokens=20_000,
            progress=False,
        )
        (root / "text.txt").write_text("\n\n".join(texts[:40]))
        run(
            lsap(
                "train",
                *train_args(
                    w | {"data": root / "data"},
                    root / "runs" / "ce",
                    "train.ckpt_every=2",
                    "train.keep_checkpoints=1",
                ),
            )
        )
        run(
            lsap(
                "store",
                "build",
                "--surrogate",
                w["surrogate"],
                "--data",
                root / "data",
                "--seq-len",
                32,
                "--k",
                4,
                "--min-alpha",
                0.01,
                "--out",
                root / "store",
                "--batch-size",
                8,
                "--chunk-windows",
                24,
                "--no-progress",
            )
        )
        (root / "world.done").write_text("")
    w.update(data=root / "data", text=root / "text.txt", ce=root / "runs" / "ce")
    w["store"] = root / "store"
    return {k: str(v) for k, v in w.items()}


def run(argv, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT, **kw)
    if r.returncode != 0:
        raise SystemExit(f"world: {shlex.join(map(str, argv))} failed:\n{r.stderr[-3000:]}")
    return r


# ------------------------------------------------------------------------------ helpers
def eos0_stream(n_docs=40, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [np.append(rng.integers(1, 600, rng.integers(5, 30)), 0) for _ in range(n_docs)]
    )


def write_raw(path: Path, dtype: str, meta: bool = False) -> None:
    s = eos0_stream()
    path.parent.mkdir(parents=True, exist_ok=True)
    s.astype(dtype).tofile(path)
    if meta:
        ends = np.nonzero(s == 0)[0] + 1
        starts = np.concatenate([[0], ends[:-1]])
        with gzip.open(path.with_name(path.stem + ".csv.gz"), "wt") as f:
            f.writelines(f"{a},{b},src.jsonl,{i}\n" for i, (a, b) in enumerate(zip(starts, ends)))


def grows(path: Path, min_bytes: int = 1) -> Callable[[], bool]:
    return lambda: path.exists() and path.stat().st_size >= min_bytes


def exists_glob(d: Path, pattern: str) -> Callable[[], bool]:
    return lambda: d.exists() and any(d.glob(pattern))


BAR = re.compile(r"\[\d\d:\d\d")  # a tqdm progress bar's elapsed time


def printed_line(r: subprocess.CompletedProcess) -> str:
    for stream in (r.stderr, r.stdout):
        lines = [ln for ln in stream.strip().splitlines() if ln.strip() and not BAR.search(ln)]
        if lines:
            return lines[-1].strip()
    return ""


# ------------------------------------------------------------------------------ the cases
def cases(w: dict) -> list[Case]:
    root = Path(w["root"])
    t = root / "t"  # scratch per case
    S, D, ST = w["surrogate"], w["data"], w["store"]
    ex = [
        PY,
        str(ROOT / "examples" / "olmo_core" / "train.py"),
        "--config",
        str(ROOT / "configs" / "paper-lsap-a0.05.yaml"),
        "--tiny",
        f"data.dir={D}",
        "data.seq_len=32",
        f"surrogate.model={S}",
    ]
    tokfile = t / "tokens_a.npy"
    sweep = t / "sweep"
    sweep.mkdir(parents=True, exist_ok=True)
    spec = lambda name, text: ((sweep / name).write_text(text), str(sweep / name))[1]  # noqa: E731
    base = f"base: [data.dir={D}, surrogate.model={S}, data.seq_len=32, model.preset=olmo2-tiny]\n"

    def tokens_a():
        sys.path.insert(0, str(ROOT / "src"))
        from lsap.data.shards import TokenShards

        np.asarray(TokenShards(D, "train").tokens(0, 4000), dtype=np.uint16).tofile(tokfile)

    def trunc_gguf():
        import gguf

        p = t / "m.gguf"
        g = gguf.GGUFWriter(str(p), "llama")
        g.add_block_count(1)
        g.add_tensor("token_embd.weight", np.ones((64, 16), dtype=np.float32))
        g.write_header_to_file()
        g.write_kv_data_to_file()
        g.write_tensors_to_file()
        g.close()
        p.write_bytes(p.read_bytes()[:-100])

    def skipped_sources():
        d = t / "src-mixed"
        d.mkdir(parents=True, exist_ok=True)
        (d / "A.TXT").write_text("An upper-case text file. " * 40)
        with gzip.open(d / "b.jsonl.gz", "wt") as f:
            f.write(json.dumps({"text": "A gzipped jsonl document. " * 40}) + "\n")
        (d / "c.txt").write_text("A plain text file. " * 40)
        (d / "notes.pdf").write_bytes(b"%PDF-1.4 not text")

    def reads_or_warns(r):
        m = t / "p-mixed" / "manifest.json"
        out = r.stderr + r.stdout
        if "skip" in out.lower() and ".pdf" in out:
            return ""
        return f"no warning naming the skipped file(s); manifest: {m.exists()}"

    def dry_run_names(r):
        names = {ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith("lsap-sur")}
        return "" if len(names) >= 2 else f"run names not distinct: {names}"

    def provenance_everywhere(r):
        missing = [ln for ln in r.stdout.splitlines() if ln.startswith("MISSING")]
        return "; ".join(missing)

    prov_py = (
        "import json,sys,glob\n"
        f"run={w['ce']!r}\n"
        "p=json.load(open(run+'/provenance.json'))\n"
        "keys=['lsap_version','torch','transformers','cpu']\n"
        "[print('MISSING provenance.json:',k) for k in keys if not p.get(k)]\n"
        "print('provenance.json:', {k:p.get(k) for k in keys+['git_commit','device']})\n"
        "cards=glob.glob(run+'/checkpoints/*/model/README.md')\n"
        "print('model cards:', len(cards)) if cards else print('MISSING model card')\n"
    )

    ce = w["ce"]
    # fmt: off
    return [
        # ---------------------------------------------------------------- red test, recipe
        Case("red test", "grad accumulation 1 vs 4 (fp64-referenced tolerance)",
             [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider",
              "tests/test_integration_transformers.py::test_grad_accumulation_one_vs_four_same_update"],
             rc=(0,), one_line=False),
        Case("cluster recipe", "prepare --max-tokens 27e9",
             lsap("prepare", "--tokenizer", w["base_tok"], "--source", w["text"],
                  "--out", t / "p27", "--max-tokens", "27e9"), rc=(0,), one_line=False),
        # ---------------------------------------------------------------- silently wrong
        Case("silently wrong", "--from-arrays uint32 arrays read as uint16 (EOS 0)",
             lsap("prepare", "--tokenizer", w["base_tok"], "--from-arrays", t / "u32",
                  "--out", t / "o-u32"), needles=("--token-dtype uint32",),
             setup=lambda: write_raw(t / "u32" / "a.npy", "uint32")),
        Case("silently wrong", "--from-arrays folder mixing uint16 and uint32",
             lsap("prepare", "--tokenizer", w["base_tok"], "--from-arrays", t / "mix",
                  "--out", t / "o-mix"), needles=("mix dtypes",),
             setup=lambda: (write_raw(t / "mix" / "a.npy", "uint16"),
                            write_raw(t / "mix" / "b.npy", "uint32"))),
        Case("silently wrong", "--from-arrays of np.save files",
             lsap("prepare", "--tokenizer", w["base_tok"], "--from-arrays", t / "npy",
                  "--out", t / "o-npy"), needles=("np.save header",),
             setup=lambda: ((t / "npy").mkdir(parents=True, exist_ok=True),
                            np.save(t / "npy" / "a.npy", eos0_stream().astype("uint16")))),
        Case("silently wrong", "preflight --base-run RUN --base <another tokenizer>",
             lsap("preflight", "--base", S, "--base-run", ce, "--surrogate", S,
                  "--data", w["text"]), needles=("is not the tokenizer of --base-run",)),
        Case("silently wrong", "preflight --batch-size -1",
             lsap("preflight", "--surrogate", S, "--data", w["text"], "--base-run", ce,
                  "--batch-size", -1)),
        Case("silently wrong", "store build --seq-len -5",
             lsap("store", "build", "--surrogate", S, "--data", D, "--seq-len", -5,
                  "--out", t / "s1")),
        Case("silently wrong", "store build --max-windows -1",
             lsap("store", "build", "--surrogate", S, "--data", D, "--seq-len", 32,
                  "--max-windows", -1, "--out", t / "s2")),
        Case("silently wrong", "OLMo-core example: a store over other files than --paths",
             [*ex, "model.vocab_size=640", "surrogate.source=store", f"surrogate.store_dir={ST}",
              f"out_dir={t / 'oc1'}", "--paths", str(tokfile), "--dtype", "uint16"],
             needles=("are not the files the store's data.dir",), setup=tokens_a),
        Case("silently wrong", "OLMo-core example: --tokenizer not the data's",
             [*ex, "model.vocab_size=768", f"out_dir={t / 'oc2'}", "--tokenizer", S],
             needles=("lsap prepare",)),
        Case("silently wrong", "LSAPTrainer(lam=-1) / lam=nan / a store with alpha=1.5",
             [PY, "-c",
              "from lsap.integrations.transformers import _lam_schedule\n"
              "from lsap.surrogate.sources import TargetSpec\n"
              "from lsap.utils.errors import ConfigError\n"
              "for f in (lambda: _lam_schedule(-1), lambda: _lam_schedule(float('nan')),\n"
              "          lambda: TargetSpec(k=15, alpha=1.5, store='/x')):\n"
              "    try: f(); print('ACCEPTED')\n"
              "    except ConfigError as e: print('refused:', e)\n"],
             rc=(0,), one_line=False,
             check=lambda r: "accepted a bad value" if "ACCEPTED" in r.stdout else ""),
        Case("silently wrong", "two lsap sweep on one --out (the second while the first holds it)",
             [PY, "-c",
              "import subprocess,sys\n"
              "from lsap.utils.lock import DirLock\n"
              f"with DirLock({str(t / 'sw-out')!r}, 'lsap sweep'):\n"
              f"    sys.exit(subprocess.run([sys.executable,'-m','lsap','sweep',{str(sweep / 'x.yaml')!r},"
              f"'--out',{str(t / 'sw-out')!r}]).returncode)\n"],
             needles=("is being written by",)),
        Case("silently wrong", "sweep: two settings with one run config",
             lsap("sweep", spec("same.yaml", base + "grid: {lsap.alpha: [0.05, 0.2]}\n"
                                "extra: [{lsap.lam: 1.0}]\nbudget_flops: 1e9\n"), "--dry-run",
                  "--out", t / "sw-same"), needles=("give the same run config",)),
        Case("silently wrong", "eval --max-examples 0",
             lsap("eval", ce, "--max-examples", 0)),
        Case("silently wrong", "prepare over a folder with .TXT / .jsonl.gz / .pdf files",
             lsap("prepare", "--tokenizer", w["base_tok"], "--source", t / "src-mixed",
                  "--out", t / "p-mixed"), rc=(0,), one_line=False,
             setup=skipped_sources, check=reads_or_warns),
        # ---------------------------------------------------------------- tracebacks
        Case("traceback", "truncated GGUF in lsap vocab",
             lsap("vocab", "--base", w["base_tok"], "--surrogate", t / "m.gguf", "--data",
                  w["text"]), needles=("truncated",), setup=trunc_gguf),
        Case("traceback", "Ctrl-C in lsap train (checkpoints every 20 steps)",
             lsap("train", *train_args(w, t / "run-int", "train.max_steps=1000",
                                       "train.ckpt_every=20")),
             rc=(130,), needles=("interrupted",),
             sigint_when=exists_glob(t / "run-int" / "checkpoints", "step_[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]/meta.json")),
        Case("traceback", "… the same command with --resume continues from the last checkpoint",
             lsap("train", "--resume", *train_args(w, t / "run-int", "train.max_steps=1000",
                                                   "train.ckpt_every=20")),
             rc=(0,), one_line=False,
             check=lambda r: "" if "resumed from" in r.stdout + r.stderr else "did not resume"),
        Case("traceback", "Ctrl-C in lsap prepare",
             lsap("prepare", "--tokenizer", w["base_tok"], "--source", "python-docs",
                  "--out", t / "p-int", "--shard-tokens", 20000), rc=(130,),
             needles=("interrupted",), sigint_when=exists_glob(t / "p-int", "train/0*.bin")),
        Case("traceback", "Ctrl-C in lsap store build",
             lsap("store", "build", "--surrogate", S, "--data", D, "--seq-len", 32, "--k", 4,
                  "--min-alpha", 0.01, "--out", t / "st-int", "--batch-size", 2,
                  "--chunk-windows", 4, "--no-progress"), rc=(130,), needles=("interrupted",),
             sigint_when=exists_glob(t / "st-int", "chunks/*.json")),
        Case("dead end", "… store resumed with another --batch-size",
             lsap("store", "build", "--surrogate", S, "--data", D, "--seq-len", 32, "--k", 4,
                  "--min-alpha", 0.01, "--out", t / "st-int", "--batch-size", 8,
                  "--chunk-windows", 4, "--no-progress"), rc=(0, 2), one_line=False,
             check=lambda r: "" if r.returncode == 0 or "batch" in printed_line(r)
             else "the refusal does not name --batch-size"),
        Case("dead end", "… store resumed with another --k names it",
             lsap("store", "build", "--surrogate", S, "--data", D, "--seq-len", 32, "--k", 6,
                  "--min-alpha", 0.01, "--out", t / "st-int", "--batch-size", 2,
                  "--chunk-windows", 4, "--no-progress"), needles=("k",)),
        *[Case("traceback", f"preflight {flag} {v}",
               lsap("preflight", "--surrogate", S, "--data", w["text"], "--base-run", ce, flag, v))
          for flag, v in (("--seq-len", 0), ("--batch-size", 0), ("--k", 0), ("--device", "cuda"))],
        *[Case("traceback", f"store build {flag} {v}",
               lsap("store", "build", "--surrogate", S, "--data", D, "--seq-len", 32,
                    "--out", t / f"sb{i}", flag, v))
          for i, (flag, v) in enumerate((("--batch-size", 0), ("--chunk-windows", 0),
                                         ("--dtype", "float16"), ("--device", "cuda")))],
        Case("traceback", "eval --device cuda", lsap("eval", ce, "--device", "cuda")),
        Case("traceback", "eval --task-dir containing '['",
             lsap("eval", ce, "--tasks", "offline", "--max-examples", 8, "--no-loss",
                  "--no-targets", "--task-dir", t / "x[1]" / "tasks", "--force"),
             rc=(0, 2), one_line=False,
             check=lambda r: "traceback" if "Traceback" in r.stderr else ""),
        Case("traceback", 'override "lsap.alpha=[0.1"',
             lsap("train", "--dry-run", *train_args(w, t / "r1", "lsap.alpha=[0.1")),
             needles=("not a YAML value",)),
        Case("traceback", "invalid YAML in a --config file",
             lsap("train", "--dry-run", "--config", t / "bad.yaml", *train_args(w, t / "r2")),
             needles=("not valid YAML",),
             setup=lambda: (t / "bad.yaml").write_text("lsap: {alpha: [0.1}\n")),
        *[Case("traceback", f"train {ov}", lsap("train", "--dry-run", *train_args(w, t / "r3", ov)),
               needles=(ov.split("=")[0],))
          for ov in ("train.seed=-1", "train.max_tokens=.inf", "model.overrides.rope_theta=.inf")],
        *[Case("traceback", f"sweep budget_flops: {b}",
               lsap("sweep", spec(f"bf{i}.yaml", base + f"grid: {{lsap.alpha: [0.05]}}\n"
                                  f"budget_flops: {b}\n"), "--out", t / f"sw-b{i}"),
               needles=("budget_flops must be a finite number",))
          for i, b in enumerate(("lots", ".inf"))],
        Case("traceback", "quickstart --ce-tokens 0",
             lsap("quickstart", "--ce-tokens", 0, "--out", t / "q0")),
        Case("traceback", "OLMo-core example: model.vocab_size too small",
             [*ex, "model.vocab_size=512", f"out_dir={t / 'oc3'}"],
             needles=("model.vocab_size=512 is smaller",)),
        # ---------------------------------------------------------------- dead ends
        Case("dead end", "quickstart --alpha 1.5 (refused before any work)",
             lsap("quickstart", "--alpha", 1.5, "--out", t / "q1"), needles=("alpha",)),
        Case("dead end", "sweep values distinct only after character 24",
             lsap("sweep", spec("long.yaml", base + "grid: {surrogate.model: "
                                "['/data/models/surrogates/checkpoint-1000', "
                                "'/data/models/surrogates/checkpoint-2000']}\nbudget_flops: 1e9\n"),
                  "--dry-run", "--out", t / "sw-long"), rc=(0, 2), one_line=False,
             check=lambda r: "" if "same run name" not in r.stderr else "same run name"),
        Case("dead end", "sweep budget_flops: 1",
             lsap("sweep", spec("b1.yaml", base + "grid: {lsap.alpha: [0.05]}\nbudget_flops: 1\n"),
                  "--out", t / "sw-1"), needles=("buys no training step",)),
        Case("dead end", "eval of a checkpoint pruned by keep_checkpoints",
             lsap("eval", ce, "--checkpoints", "step_00000002", "--no-loss", "--no-targets"),
             needles=("pruned by keep_checkpoints",)),
        *[Case("dead end", f"train {ov} (was caught by the NaN guard)",
               lsap("train", "--dry-run", *train_args(w, t / "r4", ov)),
               needles=("not a finite number",))
          for ov in ("lsap.lam=.nan", "optim.weight_decay=.inf")],
        Case("dead end", "preflight --base-run RUN without --base uses the run's tokenizer",
             lsap("preflight", "--surrogate", S, "--data", w["text"], "--base-run", ce, "--json",
                  "--n", 4, "--max-documents", 8), rc=(0,), one_line=False,
             check=lambda r: "" if "base_tok" in r.stdout or "/runs/ce" in r.stdout
             else "the run's tokenizer is not the base"),
        # ---------------------------------------------------------------- conventions
        Case("conventions", "lsap --version", lsap("--version"), rc=(0,), needles=("lsap ",),
             one_line=False),
        Case("conventions", "a bad flag is a usage error", lsap("train", "--bogus"),
             needles=("unrecognized arguments",)),
        Case("conventions", "prepare --no-progress (one name across commands)",
             lsap("prepare", "--tokenizer", w["base_tok"], "--source", w["text"],
                  "--out", t / "p-np", "--no-progress"), rc=(0,), one_line=False),
        Case("provenance", "run dir: provenance.json and model cards",
             [PY, "-c", prov_py], rc=(0,), one_line=False, check=provenance_everywhere),
    ]
    # fmt: on


# ------------------------------------------------------------------------------ running
def run_case(c: Case, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    if c.setup:
        c.setup()
    t0 = time.time()
    if c.sigint_when is None:
        r = subprocess.run(
            c.argv, capture_output=True, text=True, env={**ENV, **c.env}, cwd=ROOT, timeout=timeout
        )
        return r, time.time() - t0
    p = subprocess.Popen(
        c.argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **c.env},
        cwd=ROOT,
    )
    while p.poll() is None and not c.sigint_when() and time.time() - t0 < timeout:
        time.sleep(0.05)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(c.argv, p.returncode, out, err), time.time() - t0


def verdict(c: Case, r: subprocess.CompletedProcess) -> str:
    line = printed_line(r)
    if r.returncode not in c.rc:
        return f"exit {r.returncode}, expected {'/'.join(map(str, c.rc))}"
    if "Traceback" in r.stderr and r.returncode != 0:
        return "traceback"
    if r.returncode in (2, 130) and c.one_line:
        err = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and not BAR.search(ln)]
        if err and err[0].startswith("usage:"):  # argparse's usage block, then its one line
            err = [ln for ln in err if not (ln.startswith(("usage:", " ")))]
        if len(err) != 1:
            return f"{len(err)} stderr lines, expected one" + (
                f" (first: {err[0][:120]!r})" if err else ""
            )
    missing = [n for n in c.needles if n not in line]
    if missing:
        return f"line lacks {missing}"
    return c.check(r) if c.check else ""


def show(argv: list[str], w: dict) -> str:
    if len(argv) > 2 and argv[1] == "-c":  # a Python snippet: its last line stands for it
        argv = [*argv[:2], argv[2].splitlines()[-1].strip() + " …"]
    s = shlex.join(map(str, argv)).replace(PY + " -m lsap", "lsap").replace(PY, "python")
    for k in ("root",):
        s = s.replace(w[k], "$W")
    return s if len(s) < 300 else s[:297] + "…"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="world and scratch directory (default: a temporary one)")
    ap.add_argument("--out", help="also write the case lines (markdown) here")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    a = ap.parse_args(argv)
    root = Path(a.work or tempfile.mkdtemp(prefix="lsap-cases-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    print(f"world in {root} …", file=sys.stderr, flush=True)
    w = build_world(root)
    lines, bad, section = [], 0, None
    for c in cases(w):
        if a.k not in c.name:
            continue
        if c.section != section:
            section = c.section
            lines.append(f"\n## {section}\n")
            print(lines[-1], flush=True)
        try:
            r, dt = run_case(c)
            why = verdict(c, r)
            got = f"→ {r.returncode} → `{printed_line(r)}`"
        except subprocess.TimeoutExpired:
            why, got, dt = "timed out", "→ (timeout)", 600.0
        bad += bool(why)
        lines.append(
            f"- {c.name}: `{show(c.argv, w)}` {got} ({dt:.1f} s) "
            f"**{'good' if not why else 'NOT GOOD: ' + why}**"
        )
        print(lines[-1], flush=True)
    total = sum(1 for ln in lines if ln.startswith("- "))
    lines.append(f"\n{total - bad} of {total} cases good.")
    print(lines[-1])
    if a.out:
        Path(a.out).write_text("\n".join(lines).lstrip() + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
