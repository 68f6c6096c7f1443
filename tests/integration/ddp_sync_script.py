"""Run a short training under a distributed strategy, then check from every rank that the
trainable weights are identical everywhere (gradients were synchronized on every minibatch,
not only the first). Prints SYNC_OK on rank 0. Usage: python ddp_sync_script.py RUN_DIR OVERRIDES..."""

import sys

import torch
import torch.distributed as dist

import envs  # noqa: F401
from conftest import compose
from lorarl.factory import build_run

run_dir, overrides = sys.argv[1], sys.argv[2:]
trainer, module, _ = build_run(compose(overrides), run_dir)
trainer.fit(module)
vec = torch.cat([p.detach().float().flatten() for p in module.policy.parameters() if p.requires_grad])
gathered = [torch.zeros_like(vec) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, vec)
if dist.get_rank() == 0:
    assert all(torch.equal(gathered[0], g) for g in gathered[1:]), "trainable weights differ across ranks"
    assert module.trainer.global_step >= 2 * 2, "expected several minibatch steps per iteration"
    print(f"SYNC_OK world={dist.get_world_size()} steps={module.trainer.global_step} norm={float(vec.norm()):.4f}")
