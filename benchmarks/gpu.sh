#!/usr/bin/env bash
# One GPU benchmark for lsap (issue 12): loss, training step, target-store build, bf16 vs fp32.
#
#   bash benchmarks/gpu.sh                 # one GPU, ≤ ~8 min; writes benchmarks/results/gpu-<device>-<date>.md
#   bash benchmarks/gpu.sh --cpu-smoke     # the same code at toy shapes on CPU (tests/test_benchmarks.py)
#   bash benchmarks/gpu.sh --out DIR       # write the results file (and scratch) elsewhere
#
# Sections (each under its own time limit; a failed section is reported in the file and
# makes the script exit non-zero, the others still run):
#   1. bench_loss    bf16, V = 100,352 / 151,936, N = 8,192 / 32,768, H = 2048: lsap_loss and
#                    lsap_linear_loss vs F.cross_entropy on full bf16 logits (time, peak memory)
#   2. cache build   `lsap store build` throughput (tokens/s), qwen3-0.6b-shaped random surrogate
#   3. bench_train   exact olmo2-1b base + qwen3-0.6b-shaped surrogate, seq 4096: CE vs LSAP
#                    online vs LSAP from the store; tokens/s, MFU, peak memory; eager and compiled
#   4. precision     bf16 vs fp32 loss agreement over 20 AdamW steps
#   5. OLMo-core     OLMo2-1B (olmo2_1B_v2, V = 100,352) in OLMo-core's Trainer, seq 1024: its own CE
#                    head vs LSAPTrainModule (λ = 0 head only; online qwen3-0.6b-shaped surrogate)
# Targets (issue 12, H100/H200): CE ≥ 45% MFU; store ≤ 1.05× CE step time; online ≤ 1.20×;
# lsap_linear_loss ≤ 1.10× the time of CE+head at ≤ 10% of its peak memory (V=100,352, N=32,768).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SMOKE=0
OUT="$ROOT/benchmarks/results"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (--cpu-smoke | --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
cd "$ROOT"
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's lsap
PY="${PYTHON:-python}"
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lsap-gpu-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [[ $SMOKE == 1 ]]; then
  DEVICE=cpu
  NAME=cpu-smoke
  LOSS_ARGS=(--dtype bfloat16 --vocab 1000 --n 64 --hidden 32 --k 5 --reps 1 --device cpu --in-process)
  WORLD_ARGS=(--surrogate olmo2-tiny --surrogate-vocab 1024 --dtype float32 --max-tokens 20000)
  T=64; BUILD_ARGS=(--batch-size 4 --max-windows 16 --device cpu)
  TINY="hidden_size=64,intermediate_size=128,num_hidden_layers=2,num_attention_heads=4,num_key_value_heads=4"
  TRAIN_ARGS=(--base olmo2-tiny --base-overrides "$TINY" --base-vocab 1024 --surrogate olmo2-tiny
              --surrogate-overrides "$TINY" --surrogate-vocab 1024 --seq-len $T --micro-batch 2 --steps 1 --device cpu)
  PREC_ARGS=(--base olmo2-tiny --vocab 512 --seq-len 32 --micro-batch 2 --steps 5 --device cpu)
  OLMO_ARGS=(--base toy --d-model 64 --layers 2 --vocab 1024 --surrogate olmo2-tiny --surrogate-vocab 1024
             --seq-len 64 --micro-batch 2 --steps 2 --warmup 1 --device cpu)
  LIMIT=(600 600 600 900 600 900)  # correctness, not speed: generous on a loaded CI machine
else
  DEVICE=cuda
  NAME="$($PY -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-"))')" || exit 1
  LOSS_ARGS=(--dtype bfloat16 --vocab 100352 151936 --n 8192 32768 --hidden 2048 --k 15 --reps 3 --max-gb 120 --device cuda)
  WORLD_ARGS=(--surrogate qwen3-0.6b --dtype bfloat16)
  T=4096; BUILD_ARGS=(--batch-size 4 --max-windows 32 --device cuda)
  TRAIN_ARGS=(--base olmo2-1b --surrogate qwen3-0.6b --seq-len $T --micro-batch 4 --steps 5 --device cuda --compile-ratio)
  PREC_ARGS=(--base olmo2-60m --seq-len 1024 --micro-batch 8 --steps 20 --device cuda)
  OLMO_ARGS=(--base olmo2-1b --vocab 100352 --surrogate qwen3-0.6b --seq-len 1024 --micro-batch 8 --steps 8
             --warmup 3 --device cuda)
  LIMIT=(130 60 60 240 60 300)
fi
FILE="$OUT/gpu-$NAME-$(date +%F).md"
FAILED=0

section() {  # section TITLE LIMIT_S CMD...
  local title="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "[gpu.sh] $title ..." >&2
  { echo; echo "## $title"; echo; echo '```'; echo "\$ ${*#$ROOT/}"; echo '```'; echo; } >> "$FILE"
  timeout "$limit" "$@" > "$WORK/out.txt" 2> "$WORK/err.txt"
  local rc=$?
  cat "$WORK/out.txt" >> "$FILE"
  if [[ $rc != 0 ]]; then
    FAILED=1
    { echo; echo "**FAILED** (exit $rc$([[ $rc == 124 ]] && echo ", over the ${limit} s limit")):"; echo '```'
      tail -n 15 "$WORK/err.txt"; echo '```'; } >> "$FILE"
    echo "[gpu.sh] $title FAILED (exit $rc)" >&2
  fi
  echo "_(${title}: $((SECONDS - t0)) s)_" >> "$FILE"
}

{
  echo "# lsap GPU benchmark — $NAME — $(date +%F)"
  echo
  $PY - <<'PYEOF'
import platform, subprocess, torch
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU {platform.machine()} ({torch.get_num_threads()} threads)"
try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    rev = "?"
print(f"device: {dev} | torch {torch.__version__} | CUDA {torch.version.cuda} | lsap commit {rev or '?'}")
PYEOF
  echo
  echo "Targets (issue 12, bf16, one H100/H200): CE ≥ 45% MFU; LSAP from the store ≤ 1.05× CE step time;"
  echo "LSAP online ≤ 1.20×; lsap_linear_loss ≤ 1.10× CE+head time at ≤ 10% of its peak memory (V=100,352, N=32,768)."
  [[ $SMOKE == 1 ]] && echo && echo "**CPU smoke run: toy shapes, the figures mean nothing; it checks that the script runs.**"
} > "$FILE"

section "bench_loss (bf16)" "${LIMIT[0]}" $PY benchmarks/bench_loss.py "${LOSS_ARGS[@]}"
section "synthetic world (tokenizers, shards, random surrogate)" "${LIMIT[1]}" \
  $PY benchmarks/world.py --out "$WORK/world" "${WORLD_ARGS[@]}"
section "lsap store build" "${LIMIT[2]}" $PY benchmarks/bench_store_build.py --surrogate "$WORK/world/surrogate" \
  --data "$WORK/world/data" --seq-len $T --out "$WORK/world/store" "${BUILD_ARGS[@]}"
section "bench_train (CE / LSAP online / LSAP from the store)" "${LIMIT[3]}" \
  $PY benchmarks/bench_train.py "${TRAIN_ARGS[@]}" --modes ce lsap store --store "$WORK/world/store" --data "$WORK/world/data"
section "bf16 vs fp32 loss agreement" "${LIMIT[4]}" $PY benchmarks/bench_precision.py "${PREC_ARGS[@]}"
section "OLMo-core (CE head / LSAP head / LSAP online)" "${LIMIT[5]}" \
  $PY benchmarks/bench_olmo_core.py "${OLMO_ARGS[@]}"

echo "[gpu.sh] wrote $FILE" >&2
echo "$FILE"
exit $FAILED
