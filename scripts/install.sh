#!/usr/bin/env bash
# Install lorarl and what its tests need on a fresh Debian/Ubuntu machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The os_interaction sandbox runs its tasks on the system's own tools: /usr/bin/python3 (its
# executor and AgentBench's check scripts), useradd/groupadd (passwd), ps (procps), and sudo and
# runuser, which AgentBench's tasks call.
missing=()
[ -x /usr/bin/python3 ] || missing+=(python3)
command -v useradd >/dev/null || missing+=(passwd)
command -v ps >/dev/null || missing+=(procps)
command -v sudo >/dev/null || missing+=(sudo)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# torch 2.13.0 is pinned first so pip does not pull a multi-GB CUDA build on CPU-only machines;
# on a GPU machine install your CUDA torch before running this.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0" || $PY -m pip install -q torch
$PY -m pip install -q -e ".[test,bench]"
