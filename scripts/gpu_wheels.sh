#!/usr/bin/env bash
# The wheels the GPU image lacks, for its Python (3.12, manylinux x86_64), one version each, into
# a git-ignored folder (default .whl/) to carry to a device machine that has no network:
#
#   bash scripts/gpu_wheels.sh            # then carry .whl; scripts/gpu_check.sh installs them
#
# The image has torch, lightning, transformers, peft, torchmetrics, tensorboard and DeepSpeed's
# other needs (numpy, packaging, psutil, py-cpuinfo, msgpack, ninja, einops, tqdm, nvidia-ml-py);
# it lacks the ones below. antlr4-python3-runtime and deepspeed are published as source only:
# they are built here as pure-Python wheels (DS_BUILD_OPS=0: DeepSpeed builds its ops on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.whl}
PY=${PYTHON:-python3}
rm -rf "$OUT"
mkdir -p "$OUT"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d "$OUT" \
  hydra-core==1.3.8 omegaconf==2.3.1 gymnasium==1.4.0 farama-notifications==0.0.6 \
  hjson==3.1.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" antlr4-python3-runtime==4.9.3 deepspeed==0.19.8
ls "$OUT"
total=$(du -sm "$OUT" | cut -f1)
echo "$(ls "$OUT" | wc -l) wheels, ${total} MiB in $OUT"
[ "$total" -lt 40 ] || { echo "more than 40 MiB: too much to carry" >&2; exit 1; }
