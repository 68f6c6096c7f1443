#!/usr/bin/env bash
# Every strategy x precision on one GPU, each proven end to end, as a pass/fail table:
#   2 RL iterations on db_bench (Qwen2.5-0.5B architecture from config, random weights: no download),
#   the adapter saved in PEFT format and verified, loaded with plain PEFT, and a resumed third
#   iteration. Then the speed benchmark (bench/speed.py) on the same GPU.
#
#   bash scripts/gpu_check.sh [WHEEL_DIR] [OUT_DIR]
#
# Runs as is on a bare GPU machine that has torch, transformers, peft and lightning: the other
# Python dependencies (hydra-core, omegaconf, antlr4-python3-runtime, gymnasium,
# farama-notifications, deepspeed, hjson, pydantic, ...) are installed from WHEEL_DIR with no
# network (pip --no-index). Without WHEEL_DIR they must already be installed.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-}
OUT=${2:-${OUT:-runs/gpu_check}}
PY=${PYTHON:-python3}
MODEL=${MODEL:-qwen2.5-0.5b-random}
STRATEGIES=${STRATEGIES:-"auto ddp fsdp deepspeed_stage_2 deepspeed_stage_3"}
PRECISIONS=${PRECISIONS:-"bf16-mixed bf16-true"}
mkdir -p "$OUT"

if [ -n "$WHEELS" ]; then
  $PY -m pip install -q --no-index --find-links "$WHEELS" hydra-core omegaconf gymnasium deepspeed \
    || { echo "could not install the dependencies from $WHEELS"; exit 2; }
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'" || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false

check_adapter() {  # $1: checkpoint dir -> exit 0 if it verifies and loads with plain PEFT
  $PY - "$1" <<'EOF'
import json, sys
from pathlib import Path
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from lorarl.checkpointing import verify
ckpt = Path(sys.argv[1])
problem = verify(ckpt)
assert problem is None, problem
base = json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"]
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), str(ckpt)).cuda()
with torch.no_grad():
    logits = model(input_ids=torch.tensor([[257, 72, 105, 258]], device="cuda")).logits
assert torch.isfinite(logits).all()
EOF
}

printf "%-20s %-11s %-6s %-8s %-6s %-8s %s\n" strategy precision train adapter peft resume seconds | tee "$OUT/table.txt"
failed=0
for s in $STRATEGIES; do
  for p in $PRECISIONS; do
    run="$OUT/$s-$p"
    rm -rf "$run"
    args=(model="$MODEL" strategy="$s" precision="$p" env=db_bench trainer.accelerator=gpu trainer.devices=1
          trainer.checkpoint_every=1 trainer.progress_bar=false algorithm.envs_per_rank=8 "hydra.run.dir=$run")
    start=$(date +%s)
    train=FAIL; adapter=FAIL; peft=FAIL; resume=FAIL
    timeout 900 $PY train.py "${args[@]}" trainer.iterations=2 > "$run.log" 2>&1 && train=ok
    ckpt="$run/checkpoints/iter_000002"
    [ -f "$ckpt/adapter_model.safetensors" ] && [ -f "$ckpt/adapter_config.json" ] && adapter=ok
    [ "$adapter" = ok ] && check_adapter "$ckpt" >> "$run.log" 2>&1 && peft=ok
    if [ "$train" = ok ]; then
      timeout 900 $PY train.py "${args[@]}" trainer.iterations=3 >> "$run.log" 2>&1 \
        && grep -q "resuming from .*iter_000002" "$run.log" && [ -f "$run/checkpoints/iter_000003/manifest.json" ] && resume=ok
    fi
    printf "%-20s %-11s %-6s %-8s %-6s %-8s %s\n" "$s" "$p" "$train" "$adapter" "$peft" "$resume" $(( $(date +%s) - start )) \
      | tee -a "$OUT/table.txt"
    [ "$train$adapter$peft$resume" = okokokok ] || { failed=1; tail -5 "$run.log" | sed 's/^/    /'; }
  done
done

echo
$PY bench/speed.py --model "$MODEL" --device cuda --precision bf16-true --new-tokens 256 --seq 1024 --ppo-envs 64 \
  2>&1 | tee "$OUT/speed.txt"
exit $failed
