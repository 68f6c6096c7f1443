"""Adapter-only checkpoints: PEFT files + training stats + a small trainer state.

Layout of one checkpoint directory (``iter_000010``):
  adapter_config.json, adapter_model.safetensors   PEFT format (full fine-tuning: config.json +
                                                   model.safetensors instead)
  value_head.safetensors                           critic head, when the algorithm uses one
  training_stats.json                              metrics of the iteration just finished
  trainer_state.pt                                 Lightning checkpoint with trainable tensors,
                                                   optimizer, scheduler, loop counters
A checkpoint is written under a hidden temporary name and renamed when complete, so a kill
mid-save never leaves a directory that ``latest_checkpoint`` would pick.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from lorarl.lora import is_lora

CKPT_PATTERN = re.compile(r"^iter_(\d+)$")
TRAINER_STATE = "trainer_state.pt"
STATS_FILE = "training_stats.json"
VALUE_HEAD_FILE = "value_head.safetensors"


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:06d}"


def save_policy_files(policy: torch.nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Write the adapter (or full model) and value head from a gathered trainable state dict.

    ``state`` is keyed like ``policy.state_dict()`` (``lm.…``, ``value_head.…``); PEFT filters
    the ``lm.`` part down to adapter tensors and writes its own format."""
    directory.mkdir(parents=True, exist_ok=True)
    lm_state = {k[len("lm.") :]: v for k, v in state.items() if k.startswith("lm.")}
    if is_lora(policy.lm):
        policy.lm.save_pretrained(str(directory), state_dict=lm_state)
    else:
        policy.lm.save_pretrained(str(directory), state_dict=lm_state, safe_serialization=True)
    head = {k[len("value_head.") :]: v.contiguous() for k, v in state.items() if k.startswith("value_head.")}
    if head:
        save_file(head, str(directory / VALUE_HEAD_FILE))


def write_stats(directory: Path, stats: dict) -> None:
    (directory / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True))


def is_complete(directory: Path) -> bool:
    has_weights = (directory / "adapter_model.safetensors").exists() or (directory / "model.safetensors").exists()
    return has_weights and (directory / TRAINER_STATE).exists() and (directory / STATS_FILE).exists()


def latest_checkpoint(root: Path) -> Path | None:
    """Newest complete checkpoint under ``root`` (temporary and partial directories ignored)."""
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CKPT_PATTERN.match(p.name)) and is_complete(p)]
    return max(found)[1] if found else None


def publish(tmp: Path, final: Path) -> None:
    """Atomically move a finished temporary checkpoint into place (same filesystem rename)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def prune(root: Path, keep_last: int | None) -> None:
    if not keep_last:
        return
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := CKPT_PATTERN.match(p.name)))
    for _, path in found[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
