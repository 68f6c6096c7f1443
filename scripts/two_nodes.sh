#!/usr/bin/env bash
# Two "nodes" on one machine through torchrun (TorchElastic), as a cluster runs them, CPU and gloo:
#   bash scripts/two_nodes.sh RUN_DIR [train.py overrides...]
# e.g. bash scripts/two_nodes.sh runs/mn2 env=target_word trainer.iterations=4
# On real machines run the same torchrun line on each node with its own --node-rank and the first
# node's address as --master-addr (README, "Several machines"). Each node's log: RUN_DIR.node<N>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
run=$1
shift
port=${MASTER_PORT:-$((29500 + RANDOM % 1000))}
pids=()
for node in 0 1; do
  torchrun --nnodes 2 --nproc-per-node 1 --node-rank "$node" --master-addr 127.0.0.1 --master-port "$port" \
    train.py trainer.num_nodes=2 trainer.devices=1 strategy=ddp trainer.accelerator=cpu "hydra.run.dir=$run" \
    trainer.progress_bar=false "$@" > "$run.node$node.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
