"""Adapter-only checkpoints: PEFT files + training stats + a small trainer state.

Layout of one checkpoint directory (``iter_000010``):
  adapter_config.json, adapter_model.safetensors   PEFT format (full fine-tuning: config.json +
                                                   model.safetensors instead)
  value_head.safetensors                           critic head, when the algorithm uses one
  training_stats.json                              metrics of the iteration just finished
  trainer_state.pt                                 Lightning checkpoint with trainable tensors,
                                                   optimizer, scheduler, loop counters
  manifest.json                                    size and sha256 of every other file, written last
A checkpoint is written under a hidden temporary name, its manifest last, and renamed when
complete. ``verify`` re-hashes every file against the manifest; ``latest_checkpoint`` skips (and
names) any directory that fails, so a truncated or corrupted checkpoint is never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions): one line for the user."""


def trainable_only(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``state`` that train: the frozen base is reloaded from its path, never saved."""
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trainable}


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:06d}"


def targets_embeddings(peft_model) -> bool:
    """Whether the adapter adapts an embedding layer, so its save must carry them. Said explicitly:
    PEFT's default ("auto") otherwise asks the hub for the base model's config.json at every save,
    to see whether the vocabulary grew (a network call per checkpoint, and a download where the hub
    is reachable; lorarl never resizes the vocabulary)."""
    from peft.utils.constants import EMBEDDING_LAYER_NAMES

    targets = peft_model.peft_config["default"].target_modules or ()
    return any(name in targets for name in EMBEDDING_LAYER_NAMES)


def save_policy_files(policy: torch.nn.Module, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Write the adapter (or full model) and value head from a gathered trainable state dict.

    ``state`` is keyed like ``policy.state_dict()`` (``lm.…``, ``value_head.…``); PEFT filters
    the ``lm.`` part down to adapter tensors and writes its own format."""
    directory.mkdir(parents=True, exist_ok=True)
    lm_state = {k[len("lm.") :]: v for k, v in state.items() if k.startswith("lm.")}
    if is_lora(policy.lm):  # the trained adapter only, not a warm start's frozen reference copy
        policy.lm.save_pretrained(str(directory), state_dict=lm_state, selected_adapters=["default"],
                                  save_embedding_layers=targets_embeddings(policy.lm))
    else:
        policy.lm.save_pretrained(str(directory), state_dict=lm_state, safe_serialization=True)
    head = {k[len("value_head.") :]: v.contiguous() for k, v in state.items() if k.startswith("value_head.")}
    if head:
        save_file(head, str(directory / VALUE_HEAD_FILE))


def write_stats(directory: Path, stats: dict) -> None:
    (directory / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path) -> None:
    """Sizes and hashes of every file, written last: its presence means the rest was complete."""
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    tmp = directory / f".{MANIFEST}"
    tmp.write_text(json.dumps({"files": files}, indent=2))
    tmp.rename(directory / MANIFEST)


def verify(directory: Path) -> str | None:
    """None when every file matches the manifest; otherwise what is wrong, in a few words."""
    try:
        files = json.loads((directory / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable manifest.json (an interrupted or foreign save)"
    needed = {TRAINER_STATE, STATS_FILE} | ({"adapter_model.safetensors"} if "adapter_model.safetensors" in files
                                             else {"model.safetensors"})
    if needed - set(files):
        return f"the manifest lists no {sorted(needed - set(files))[0]}"
    for name, meta in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["size"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {meta['size']}"
        if _sha256(path) != meta["sha256"]:
            return f"{name} does not match its sha256"
    return None


def checkpoints(root: Path) -> list[Path]:
    """The checkpoint directories under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = sorted(((int(m.group(1)), p) for p in root.iterdir() if (m := CKPT_PATTERN.match(p.name))), reverse=True)
    return [p for _, p in found]


def latest_checkpoint(root: Path) -> Path | None:
    """Newest checkpoint under ``root`` that verifies; a damaged newer one is skipped with a warning.
    When there are checkpoints and none verifies, a CheckpointError says so: starting over would
    overwrite them."""
    found = checkpoints(root)
    problems = []
    for path in found:
        problem = verify(path)
        if problem is None:
            for skipped in problems:
                log.warning("skipping checkpoint %s", skipped)
            return path
        problems.append(f"{path.name}: {problem}")
    if found:
        raise CheckpointError(f"none of the {len(found)} checkpoints in {root} verifies ({problems[0]}); they are "
                              "kept as they are: pass resume=null to start over (they are then moved aside)")
    return None


def move_aside(root: Path, stamp: str) -> Path | None:
    """Move every checkpoint under ``root`` into ``root/previous-<stamp>/``, so that a run started
    over does not overwrite them; the directory, or None when there were none."""
    found = checkpoints(root)
    if not found:
        return None
    aside = root / f"previous-{stamp}"
    aside.mkdir(parents=True, exist_ok=True)
    for path in found:
        path.rename(aside / path.name)
    return aside


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
