"""Attach LoRA adapters (PEFT) to a base model, or leave it whole for full fine-tuning.

``specs.LoraSpec`` is also the config schema of ``model.lora`` (defaults: conf/lora/default.yaml).
"""

from __future__ import annotations

import contextlib

import torch

from lorarl.specs import LoraSpec

REFERENCE_ADAPTER = "reference"  # a warm start's frozen adapter: the policy RL started from


def apply_lora(model: torch.nn.Module, spec: LoraSpec) -> torch.nn.Module:
    """Return a PeftModel with trainable adapters, or the model itself (all weights trainable)."""
    from peft import LoraConfig, PeftModel, get_peft_model  # PEFT loads slowly: only when building

    if not spec.active:
        model.requires_grad_(True)
        return model
    if spec.lora_path:
        # Continue training the saved adapter; a frozen second copy is the KL reference, so RL from an
        # SFT warm start is kept near the SFT policy, not pulled back to the untrained base.
        model = PeftModel.from_pretrained(model, spec.lora_path, is_trainable=True)
        model.load_adapter(spec.lora_path, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        return model
    check_targets(model, spec)
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


def check_targets(model: torch.nn.Module, spec: LoraSpec) -> None:
    """Refuse, before PEFT allocates anything, targets that match no layer and a rank above a
    targeted layer's width (it adds parameters without adding capacity)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not out}
    if spec.target_modules == "all-linear":  # PEFT's meaning: every linear layer but the output head
        targets = linear
    else:
        targets = {n: m for n, m in linear.items() if n.rsplit(".", 1)[-1] in set(spec.target_modules)}
        if not targets:
            names = sorted({n.rsplit(".", 1)[-1] for n in linear})
            raise ValueError(f"model.lora.target_modules={list(spec.target_modules)} matches no module of this "
                             f"model (its linear layers: {', '.join(names)})")
    name, layer = min(targets.items(), key=lambda kv: min(kv[1].in_features, kv[1].out_features))
    width = min(layer.in_features, layer.out_features)
    if spec.rank > width:
        raise ValueError(f"model.lora.rank={spec.rank} is invalid: larger than the width of {name} "
                         f"({layer.in_features} -> {layer.out_features}); use at most {width}")


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def merged_for_inference(model: torch.nn.Module):
    """Inside the block the active adapters are folded into the weights (W + scale * B @ A) and each
    LoRA wrapper is replaced by its merged base layer, so generation runs plain linear layers: one
    matmul per layer instead of three, and none of the wrapper's per-call work. The base tensors
    are swapped for merged copies, not modified in place: after the block the model is bit-for-bit
    what it was (an in-place merge and unmerge drifts by rounding, and the base must stay the KL
    reference). Costs one copy of the adapted weights while inside. Not for sharded weights
    (FSDP2, ZeRO-3)."""
    from peft.tuners.lora import LoraLayer

    swapped = []
    try:
        with torch.no_grad():
            for name, module in list(model.named_modules()):
                if not isinstance(module, LoraLayer) or not hasattr(module, "get_delta_weight") or module.merged:
                    continue
                names = [a for a in module.active_adapters if a in module.lora_A]
                if not names:
                    continue
                base = module.get_base_layer()
                original = base.weight.data
                base.weight.data = original + sum(module.get_delta_weight(a) for a in names).to(original.dtype)
                parent_name, _, attr = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, attr, base)
                swapped.append((parent, attr, module, base, original))
        yield
    finally:
        for parent, attr, module, base, original in reversed(swapped):
            setattr(parent, attr, module)
            base.weight.data = original
