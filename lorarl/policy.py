"""The trainable policy: a causal LM (usually PEFT-wrapped), an optional value head, and the
reference policy used for the KL term.

With LoRA the reference is the same weights with the adapter disabled, so no second copy is
held. Full fine-tuning has no adapter to disable: a frozen copy is kept only when asked for.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CompileConfig, GenerationConfig

from lorarl.lora import REFERENCE_ADAPTER, is_lora
from lorarl.ops import position_ids_from_mask, shift_to_tokens, token_entropy, token_logprobs


@dataclass
class PolicyOutput:
    logprobs: torch.Tensor  # [B, T] log p(x_t | x_<t)
    entropy: torch.Tensor  # [B, T] entropy of the distribution x_t was drawn from
    values: torch.Tensor | None  # [B, T] V(x_<t), the critic's estimate before token t


@dataclass
class Generation:
    tokens: torch.Tensor  # [B, N] new token ids, pad after each row's end
    logprobs: torch.Tensor  # [B, N] sampling-time log p of each new token
    lengths: torch.Tensor  # [B] number of new tokens per row (eos included when emitted)


class Policy(nn.Module):
    def __init__(self, lm: nn.Module, with_value_head: bool, keep_reference: bool):
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size
        # Lives outside the PEFT model, so PEFT never freezes it; saved next to the adapter.
        self.value_head = nn.Linear(hidden, 1) if with_value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        self.reference = None
        if keep_reference and not is_lora(lm):
            self.reference = copy.deepcopy(lm).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "Policy":
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # a frozen copy: never in train mode (dropout would change its logprobs)
        return self

    @property
    def has_reference(self) -> bool:
        """Whether KL to the base model can be computed (LoRA: adapter off; full FT: a kept copy)."""
        return is_lora(self.lm) or self.reference is not None

    def forward(self, input_ids, attention_mask, temperature: float = 1.0, with_values: bool = False) -> PolicyOutput:
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            output_hidden_states=with_values,
            use_cache=False,
        )
        values = None
        if with_values:
            hidden = out.hidden_states[-1][:, :-1]
            values = shift_to_tokens(self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float())
        return PolicyOutput(token_logprobs(out.logits, input_ids, temperature), token_entropy(out.logits, temperature), values)

    @torch.no_grad()
    def reference_logprobs(self, input_ids, attention_mask, temperature: float = 1.0) -> torch.Tensor:
        """log p of the reference policy: the base model (LoRA: adapter disabled), or, for a warm
        start from a saved adapter, that adapter as it was loaded (frozen copy)."""
        kwargs = {}
        if is_lora(self.lm) and REFERENCE_ADAPTER in self.lm.peft_config:
            ctx, model = contextlib.nullcontext(), self.lm
            kwargs = {"adapter_names": [REFERENCE_ADAPTER] * input_ids.shape[0]}  # PEFT's per-row adapters
        elif is_lora(self.lm):
            ctx, model = self.lm.disable_adapter(), self.lm
        elif self.reference is not None:
            ctx, model = contextlib.nullcontext(), self.reference
        else:
            raise RuntimeError("full fine-tuning keeps no reference model; construct Policy(keep_reference=True)")
        with ctx:
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
                **kwargs,
            ).logits
        return token_logprobs(logits, input_ids, temperature)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling, eos_token_id: int,
                 pad_token_id: int, synced_gpus: bool = False) -> Generation:
        """Sample from the full distribution (no top-k/top-p) so recorded logprobs are the
        policy's own: PPO's ratio then starts at exactly 1. ``sampling`` is a SamplingSpec."""
        greedy, temperature = sampling.greedy, sampling.temperature
        extra = {}
        if sampling.cache == "static":
            # Fewer distinct shapes, fewer recompilations: pad the prompt width to a multiple of 64.
            input_ids, attention_mask = _pad_left_to_multiple(input_ids, attention_mask, 64, pad_token_id)
            extra = {"cache_implementation": "static", "disable_compile": not sampling.compile}
            if sampling.compile:
                mode = "reduce-overhead" if input_ids.is_cuda else "default"  # CUDA graphs where there is CUDA
                compile_config = CompileConfig(mode=mode)
                compile_config._compile_all_devices = True  # transformers compiles on accelerators only, otherwise
                extra["compile_config"] = compile_config
        config = GenerationConfig(
            do_sample=not greedy,
            max_new_tokens=sampling.max_new_tokens,
            temperature=temperature if not greedy else None,
            top_k=None,
            top_p=None,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            **extra,
        )
        out = self.lm.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config, synced_gpus=synced_gpus
        )
        new = out.sequences[:, input_ids.shape[1] :]
        raw = torch.stack(out.logits, dim=1).float()  # unprocessed logits, one step per new token
        logp = torch.log_softmax(raw / (1.0 if greedy else temperature), -1).gather(-1, new[..., None]).squeeze(-1)
        is_eos = new == eos_token_id
        first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(new[:, 0], new.shape[1] - 1))
        lengths = torch.where(is_eos.any(1), first_eos + 1, torch.full_like(first_eos, new.shape[1]))
        return Generation(new, logp, lengths)


def _pad_left_to_multiple(ids: torch.Tensor, mask: torch.Tensor, multiple: int, pad_id: int):
    extra = -ids.shape[1] % multiple
    if not extra:
        return ids, mask
    pad = torch.full((ids.shape[0], extra), pad_id, dtype=ids.dtype, device=ids.device)
    return torch.cat([pad, ids], 1), torch.cat([torch.zeros_like(pad, dtype=mask.dtype), mask], 1)
