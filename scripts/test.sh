#!/usr/bin/env bash
# The test command: install, then the suite (CPU only; GPU checks live in scripts/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pytest -q
