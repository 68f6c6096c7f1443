"""Attach LoRA adapters (PEFT) to a base model, or leave it whole for full fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model


@dataclass
class LoraSpec:
    enabled: bool = True  # False (or rank 0) trains every base weight instead
    rank: int = 8
    alpha: float = 16.0  # scaling is alpha / rank
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    exclude_modules: list[str] = field(default_factory=list)
    init: str = "default"  # "default": PEFT's zero-B (adapter starts as identity); "gaussian"
    lora_path: str | None = None  # warm-start from this saved adapter directory

    @property
    def active(self) -> bool:
        return self.enabled and self.rank > 0


def apply_lora(model: torch.nn.Module, spec: LoraSpec) -> torch.nn.Module:
    """Return a PeftModel with trainable adapters, or the model itself (all weights trainable)."""
    if not spec.active:
        model.requires_grad_(True)
        return model
    if spec.lora_path:
        return PeftModel.from_pretrained(model, spec.lora_path, is_trainable=True)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        exclude_modules=list(spec.exclude_modules) or None,
        init_lora_weights=True if spec.init == "default" else spec.init,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)
