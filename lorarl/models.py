"""Base causal LMs: a tiny Qwen2 built in code (offline default) or a pretrained checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from lorarl.packaged import resolve
from lorarl.specs import TinyModelSpec


def build_tiny_model(spec: TinyModelSpec, vocab_size: int, eos_token_id: int, pad_token_id: int) -> PreTrainedModel:
    config = Qwen2Config(
        vocab_size=max(vocab_size, spec.vocab_size or 0),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=False,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    # A private generator keeps the global RNG stream (sampling, LoRA init) untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        return AutoModelForCausalLM.from_config(config)


def missing_local_path(path: str) -> bool:
    """A path (not a hub id) that is not there: callers say so, rather than quote the hub's id rules."""
    return path.startswith(("/", ".", "~")) and not Path(path).expanduser().exists()


def load_pretrained_model(path: str, dtype: torch.dtype | None = None, trust_remote_code: bool = False) -> PreTrainedModel:
    """A hub id, a local directory, or a packaged model's hub id (``lorarl.packaged``: offline)."""
    return AutoModelForCausalLM.from_pretrained(resolve(path), dtype=dtype, trust_remote_code=trust_remote_code)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks (FSDP2 shards and checkpoints at this granularity)."""
    no_split = set(getattr(_unwrap(model), "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in no_split]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model
