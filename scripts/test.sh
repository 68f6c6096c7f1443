#!/usr/bin/env bash
# The test command: install, then the suite (CPU only; GPU checks live in scripts/gpu_check.sh).
# Two test processes side by side (pytest-xdist, a file per process at a time, so a module's
# fixtures are built once): in one process the suite keeps one core busy (imports, subprocesses,
# envs), so on 2 cores this took 568 s instead of 670 s; tests/conftest.py gives each process its share of the
# cores (OMP_NUM_THREADS), as two processes of a thread per core slowed each other down. Then, alone, the tests marked serial: they watch the whole
# machine (/tmp, cgroups), time themselves, or load every core. Plain `python3 -m pytest` runs
# everything in one process, in order.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pytest -q -n 2 --dist loadfile -m "not slow and not serial"
python3 -m pytest -q -m "serial and not slow"
