"""The trainable policy: a causal LM (usually PEFT-wrapped), an optional value head, and the
reference policy used for the KL term.

With LoRA the reference is the same weights with the adapter disabled, so no second copy is
held. Full fine-tuning has no adapter to disable: a frozen copy is kept only when asked for.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import CompileConfig, GenerationConfig

from lorarl.decoding import decode
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

    def forward(self, input_ids, attention_mask, temperature: float = 1.0, with_values: bool = False,
                positions: torch.Tensor | None = None, entropy_grad: bool = True) -> PolicyOutput:
        """log p, entropy (and values) of the tokens at ``positions`` ([B, T] bool; None: every
        token but the first), zero elsewhere. The vocabulary projection runs only where these
        tokens are predicted (``_TokenHead``): with a 150k vocabulary and long prompts, logits
        for every position would be most of the memory. ``entropy_grad`` False: the entropy is
        for the log only (no entropy bonus), and carries no gradient."""
        positions = _default_positions(attention_mask) if positions is None else positions
        with _TokenHead(self.lm, positions, input_ids, temperature, entropy_grad) as head:
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        got = head.result(out.logits)
        if got is None:
            return self._full_logits_forward(input_ids, attention_mask, temperature, with_values, positions)
        values = None
        if with_values:  # V(x_<t) from the hidden state that predicts token t, at the same positions
            v = self.value_head(head.hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
            values = head.scatter(v)
        return PolicyOutput(*got, values)

    def _full_logits_forward(self, input_ids, attention_mask, temperature, with_values, positions) -> PolicyOutput:
        """For models that post-process their logits: every position's logits, as the head makes them."""
        _warn_full_logits(self.lm)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                      output_hidden_states=with_values, use_cache=False)
        keep = positions.float()
        values = None
        if with_values:
            hidden = out.hidden_states[-1][:, :-1]
            values = shift_to_tokens(self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()) * keep
        return PolicyOutput(token_logprobs(out.logits, input_ids, temperature) * keep,
                            token_entropy(out.logits, temperature) * keep, values)

    @torch.no_grad()
    def reference_logprobs(self, input_ids, attention_mask, temperature: float = 1.0,
                           positions: torch.Tensor | None = None) -> torch.Tensor:
        """log p of the reference policy at ``positions`` (as ``forward``): the base model (LoRA:
        adapter disabled), or, for a warm start from a saved adapter, that adapter as it was
        loaded (frozen copy)."""
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
        positions = _default_positions(attention_mask) if positions is None else positions
        with ctx:
            with _TokenHead(model, positions, input_ids, temperature) as head:
                out = model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask), use_cache=False, **kwargs)
            got = head.result(out.logits)
            if got is None:
                _warn_full_logits(model)
                out = model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids_from_mask(attention_mask), use_cache=False, **kwargs)
                return token_logprobs(out.logits, input_ids, temperature) * positions
            return got[0]

    def _decode(self, input_ids, attention_mask, max_new_tokens, temperature, eos_token_id, pad_token_id,
                lean: bool) -> Generation:
        # inference_mode, not no_grad: no version counters or view tracking on the thousands of
        # small tensors decoding makes (what it returns becomes Python lists, never autograd inputs)
        with torch.inference_mode():
            tokens, logprobs, lengths = decode(self.lm, input_ids, attention_mask, max_new_tokens, temperature,
                                               eos_token_id, pad_token_id, lean)
        return Generation(tokens.clone(), logprobs.clone(), lengths.clone())

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling, eos_token_id: int,
                 pad_token_id: int, synced_gpus: bool = False) -> Generation:
        """Sample from the full distribution (no top-k/top-p) so recorded logprobs are the
        policy's own: PPO's ratio then starts at exactly 1. ``sampling`` is a SamplingSpec.
        With the dynamic KV cache on one process (or unsharded), a short loop of our own decodes
        (``lorarl.decoding``): transformers' generate costs about a third more per token in
        bookkeeping that this case does not need, and for Qwen2 and Llama models each new token
        skips transformers' forward altogether (``sampling.lean_steps``). Static caches,
        compilation and lockstep decoding across sharded ranks (``synced_gpus``) go through
        transformers' generate."""
        greedy, temperature = sampling.greedy, sampling.temperature
        if sampling.cache == "dynamic" and not synced_gpus:
            return self._decode(input_ids, attention_mask, sampling.max_new_tokens, None if greedy else temperature,
                                eos_token_id, pad_token_id, sampling.lean_steps)
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
            # 0 and 1.0, not None: for None transformers falls back to its default top_k=50, which
            # would sample from a truncated distribution while logprobs are the full one's.
            top_k=0,
            top_p=1.0,
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


# Logits of one chunk of positions stay under about 256 MB (fp32): 441 positions at Qwen's 151,936.
CHUNK_ELEMENTS = 1 << 26
KEEP_ELEMENTS = 1 << 22  # up to 16 MB of logits (fp32) are kept for backward rather than recomputed


class _TokenHead(nn.Module):
    """Stands in for a causal LM's output head during one forward pass. Given the final hidden
    states it projects only the positions that predict the wanted tokens, a chunk at a time, and
    keeps log p of each wanted token and the entropy of its distribution; with gradients on, each
    chunk is recomputed in backward instead of kept (``torch.utils.checkpoint``), so no full
    [positions, vocabulary] tensor lives through the backward pass. It runs inside the model's
    forward, where sharded strategies have the head's weights whole.

    The model's forward then returns this head's small stand-in tensor as "logits"; a model that
    post-processes logits (soft-capping, scaling) would change it, which ``result`` detects: it
    then falls back to full logits for that forward (correct, without the memory saving)."""

    def __init__(self, model: nn.Module, positions: torch.Tensor, input_ids: torch.Tensor, temperature: float,
                 entropy_grad: bool = True):
        super().__init__()
        self.temperature, self.entropy_grad = temperature, entropy_grad
        predict = torch.zeros_like(positions)
        predict[:, :-1] = positions[:, 1:]  # the logits at t - 1 predict token t
        self.rows, self.cols = predict.nonzero(as_tuple=True)
        self.shape, self.targets = input_ids.shape, input_ids[self.rows, self.cols + 1]
        base = model.get_base_model() if is_lora(model) else model
        owner, head = _head_owner(base)
        # Plain attributes, not submodules: this object sits inside the model while it stands in,
        # and the model's module tree must not gain a cycle or a second path to the head.
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "head", head)
        self.hidden = self.out = None

    def __enter__(self) -> "_TokenHead":
        name, parent = self.owner
        parent._modules[name] = self
        return self

    def __exit__(self, *exc) -> None:
        name, parent = self.owner
        parent._modules[name] = self.head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.shape[:2] != self.shape:  # not the forward we stand in for (e.g. a slice of positions)
            return self.head(hidden)
        self.hidden = hidden[self.rows, self.cols]  # [N, H]
        n, vocab = self.hidden.shape[0], self.head.out_features
        step = max(1, CHUNK_ELEMENTS // vocab)
        # Recompute in backward only where keeping the logits would cost memory worth saving.
        recompute = torch.is_grad_enabled() and n * vocab > KEEP_ELEMENTS
        parts = []
        for i in range(0, n, step):
            h, y = self.hidden[i:i + step], self.targets[i:i + step]
            parts.append(checkpoint(self._chunk, h, y, use_reentrant=False) if recompute else self._chunk(h, y))
        logp = torch.cat([p[0] for p in parts]) if parts else self.hidden.new_zeros(0, dtype=torch.float32)
        ent = torch.cat([p[1] for p in parts]) if parts else logp
        self.out = torch.stack([logp, ent], -1)[None]  # [1, N, 2]: what the model returns as logits
        return self.out

    def _chunk(self, h: torch.Tensor, y: torch.Tensor):
        logp = torch.log_softmax(self.head(h).float() / self.temperature, dim=-1)
        with contextlib.nullcontext() if self.entropy_grad else torch.no_grad():  # a metric only: no backward through it
            entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, y[:, None]).squeeze(-1), entropy

    def scatter(self, per_token: torch.Tensor) -> torch.Tensor:
        """[N] values of the wanted tokens -> [B, T], aligned with input_ids, zero elsewhere."""
        out = per_token.new_zeros(self.shape)
        return out.index_put((self.rows, self.cols + 1), per_token)

    def result(self, returned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log p, entropy) as [B, T]; None when the model did not return this head's output as
        it was (it post-processes logits): the caller must then use full logits."""
        if self.out is None or returned is not self.out:
            return None
        logp, ent = self.out[0].unbind(-1)
        return self.scatter(logp), self.scatter(ent)


def _default_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Every real token but the first (which nothing predicts)."""
    positions = attention_mask.bool().clone()
    positions[:, 0] = False
    return positions


@functools.lru_cache(maxsize=None)
def _warned(kind: str) -> bool:
    logging.getLogger("lorarl").warning(
        "%s post-processes its logits (soft-capping or scaling): log-probabilities are computed from full "
        "logits at every position, without the action-positions-only memory saving", kind)
    return True


def _warn_full_logits(model: nn.Module) -> None:
    _warned(type(model.get_base_model() if is_lora(model) else model).__name__)


def _head_owner(model: nn.Module) -> tuple[tuple[str, nn.Module], nn.Module]:
    """((attribute name, module holding it), head) for the model's output embedding layer;
    found once per model (a walk over every module) and remembered on it."""
    head = model.get_output_embeddings()
    known = model.__dict__.get("_lorarl_head_owner")
    if known is not None and known[0][1]._modules.get(known[0][0]) is head:
        return known
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is head:
                model.__dict__["_lorarl_head_owner"] = ((name, parent), head)
                return (name, parent), head
    raise RuntimeError(f"{type(model).__name__}: its output head is not one of its modules")


def _pad_left_to_multiple(ids: torch.Tensor, mask: torch.Tensor, multiple: int, pad_id: int):
    extra = -ids.shape[1] % multiple
    if not extra:
        return ids, mask
    pad = torch.full((ids.shape[0], extra), pad_id, dtype=ids.dtype, device=ids.device)
    return torch.cat([pad, ids], 1), torch.cat([torch.zeros_like(pad, dtype=mask.dtype), mask], 1)
