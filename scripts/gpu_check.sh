#!/usr/bin/env bash
# The GPU half in ONE device call (at most 9 minutes on one H100, the wheel install included):
#   1. every strategy x precision proven end to end (scripts/gpu_check.py: 2 RL iterations on
#      db_bench with the Qwen2.5-0.5B architecture, random weights, no download; the adapter
#      saved, verified, loaded with plain PEFT; a resumed 3rd iteration): a pass/fail table
#   2. the GPU benchmark (bench/speed.py): rollout decode at batch 64 x 256 new tokens (unmerged,
#      merged, merged + static cache + compile), training batch 8 x 1024 LoRA vs full fine-tuning,
#      seconds per PPO iteration on db_bench with 64 episodes and where they go
#
#   bash scripts/gpu_wheels.sh                    # here, once: the wheels the GPU image lacks (.whl/)
#   bash scripts/gpu_check.sh .whl "$OUT"          # there (device tool: carry .whl)
#
# Budget, every part under its own `timeout` and writing to OUT as it goes (a part that runs out
# of time leaves a FAIL row or a missing table, never a lost run):
#   wheels 30 s | auto 150 s (builds the 0.5B base once: bf16-true, bf16-mixed) | ddp 60 s |
#   fsdp 100 s (bf16-true, bf16-mixed) | deepspeed_stage_2 70 s | deepspeed_stage_3 80 s |
#   bench: rollout 80 s, train 60 s, PPO 70 s                           = 8 min 20 s at most
# Phase costs measured on CPU (docs/performance.md, "Budgeting the GPU check") and the H100
# anchors (798 tok/s unmerged at batch 64; 42.6k training tok/s) set these caps.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-}
OUT=${2:-${OUT:-runs/gpu_check}}
PY=${PYTHON:-python3}
MODEL=${MODEL:-qwen2.5-0.5b-random}
mkdir -p "$OUT"
started=$(date +%s)
stamp() { echo "[$(( $(date +%s) - started )) s] $*" | tee -a "$OUT/progress.txt"; }

if [ -n "$WHEELS" ]; then
  timeout 30 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || { echo "could not install the wheels from $WHEELS"; exit 2; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name(0))" \
  | tee "$OUT/device.txt" || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
stamp "wheels installed"

strategy() {  # $1 strategy, $2 precisions, $3 seconds, $4 base model dir (optional)
  timeout "$3" $PY scripts/gpu_check.py "$1" "$OUT" --model "$MODEL" --precisions "$2" ${4:+--base "$4"} \
    > "$OUT/$1.log" 2>&1 || echo "{\"strategy\": \"$1\", \"error\": \"exit $? (timeout: $3 s)\"}" >> "$OUT/gpu_check.jsonl"
  stamp "$1 done"
}
strategy auto bf16-true,bf16-mixed 150
BASE="$OUT/auto-bf16-true/base_model"
[ -d "$BASE" ] || BASE=""
strategy ddp bf16-true 60 "$BASE"
strategy fsdp bf16-true,bf16-mixed 100 "$BASE"
strategy deepspeed_stage_2 bf16-true 70 "$BASE"
strategy deepspeed_stage_3 bf16-true 80 "$BASE"
$PY - "$OUT/gpu_check.jsonl" <<'EOF' | tee "$OUT/table.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'strategy':20s} {'precision':11s} {'train':6s} {'adapter':8s} {'peft':6s} {'resume':7s} {'s':>6s}  error")
for r in rows:
    print(f"{r.get('strategy', '?'):20s} {r.get('precision', '-'):11s} {r.get('train', 'FAIL'):6s} {r.get('adapter', 'FAIL'):8s} "
          f"{r.get('peft', 'FAIL'):6s} {r.get('resume', 'FAIL'):7s} {r.get('seconds', 0):6.1f}  {r.get('error', '')}")
EOF

bench() {  # $1 seconds, $2 name, then bench/speed.py arguments
  local seconds=$1 name=$2
  shift 2
  timeout "$seconds" $PY bench/speed.py --model "$MODEL" --device cuda --precision bf16-true --rounds 2 --repeats 3 "$@" \
    > "$OUT/speed_$name.txt" 2>&1 || echo "(stopped: exit $? after at most $seconds s)" >> "$OUT/speed_$name.txt"
  stamp "bench $name done"
}
bench 80 rollout --parts rollout --batches 64 --prompt 128 --new-tokens 256 --static-compile --skip-forward-steps
bench 60 train --parts train --batch 8 --seq 1024
bench 70 ppo --parts ppo --ppo-envs 64 --rounds 1
cp bench/results.jsonl "$OUT/results.jsonl" 2>/dev/null
grep -q FAIL "$OUT/table.txt" && exit 1
exit 0
