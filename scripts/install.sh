#!/usr/bin/env bash
# Install lorarl and what its tests need on a fresh Debian/Ubuntu machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# torch 2.13.0 is pinned first so pip does not pull a multi-GB CUDA build on CPU-only machines;
# on a GPU machine install your CUDA torch before running this.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0" || $PY -m pip install -q torch
$PY -m pip install -q -e ".[test]"
