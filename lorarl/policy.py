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
from lorarl.ops import position_ids_from_mask
from lorarl.packing import MicroBatch


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
        token but the first) of a padded batch (left or right), zero elsewhere; one forward."""
        positions = _default_positions(attention_mask) if positions is None else positions
        rows, cols = positions.nonzero(as_tuple=True)
        source = rows * input_ids.shape[1] + cols - 1  # the hidden state at t - 1 predicts token t
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids_from_mask(attention_mask)}
        return self._predict(self.lm, inputs, source, input_ids[rows, cols], (rows, cols), input_ids.shape,
                             temperature, with_values, entropy_grad)

    def packed(self, mb: MicroBatch, wanted: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0,
               with_values: bool = False, entropy_grad: bool = True, reference: bool = False) -> PolicyOutput:
        """``forward`` for the episodes of one micro-batch (``lorarl.packing``): ``wanted`` and
        ``ids`` are [E, T], aligned with its episodes; the outputs too. ``reference``: the
        reference policy's log p (``reference_context``), no gradient."""
        source, targets, at = mb.predictions(wanted, ids)
        inputs = {"input_ids": mb.input_ids, "position_ids": mb.position_ids, "attention_mask": mb.attention_mask}
        if not reference:
            return self._predict(self.lm, inputs, source, targets, at, wanted.shape, temperature, with_values,
                                 entropy_grad)
        with torch.no_grad(), self.reference_context(mb.input_ids.shape[0]) as (model, kwargs):
            return self._predict(model, {**inputs, **kwargs}, source, targets, at, wanted.shape, temperature,
                                 False, False)

    def _predict(self, model, inputs: dict, source, targets, at, shape, temperature, with_values,
                 entropy_grad) -> PolicyOutput:
        """One forward of ``model``; log p and entropy of ``targets`` predicted by the hidden
        states at flat positions ``source``, scattered to ``at`` in a [*shape] output. The
        vocabulary projection runs only at those positions (``_TokenHead``): with a 150k
        vocabulary and long prompts, logits for every position would be most of the memory.
        ``entropy_grad`` False: the entropy is for the log only (no entropy bonus)."""
        ids = inputs["input_ids"]
        with _TokenHead(model, source, targets, ids.shape, temperature, entropy_grad) as head:
            out = model(**inputs, use_cache=False)
        got = head.result(out.logits)
        hidden = head.hidden
        if got is None:  # the model post-processed its logits: every position's, as its head makes them
            _warn_full_logits(model)
            out = model(**inputs, use_cache=False, output_hidden_states=with_values)
            flat = out.logits.reshape(-1, out.logits.shape[-1])[source].float() / temperature
            logp = torch.log_softmax(flat, -1)
            got = logp.gather(-1, targets[:, None])[:, 0], -(logp.exp() * logp).sum(-1)
            hidden = out.hidden_states[-1].reshape(-1, out.hidden_states[-1].shape[-1])[source] if with_values else None
        values = None
        if with_values:  # V(x_<t) from the hidden state that predicts token t
            values = _scatter(self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float(), at, shape)
        return PolicyOutput(_scatter(got[0], at, shape), _scatter(got[1], at, shape), values)

    @contextlib.contextmanager
    def reference_context(self, rows: int):
        """(model, extra forward arguments) of the reference policy: the base model (LoRA: adapter
        disabled), or, for a warm start from a saved adapter, that adapter as it was loaded
        (frozen copy)."""
        if is_lora(self.lm) and REFERENCE_ADAPTER in self.lm.peft_config:
            yield self.lm, {"adapter_names": [REFERENCE_ADAPTER] * rows}  # PEFT's per-row adapters
        elif is_lora(self.lm):
            with self.lm.disable_adapter():
                yield self.lm, {}
        elif self.reference is not None:
            yield self.reference, {}
        else:
            raise RuntimeError("full fine-tuning keeps no reference model; construct Policy(keep_reference=True)")

    @torch.no_grad()
    def reference_logprobs(self, input_ids, attention_mask, temperature: float = 1.0,
                           positions: torch.Tensor | None = None) -> torch.Tensor:
        """log p of the reference policy at ``positions`` (as ``forward``)."""
        positions = _default_positions(attention_mask) if positions is None else positions
        rows, cols = positions.nonzero(as_tuple=True)
        source = rows * input_ids.shape[1] + cols - 1
        with self.reference_context(input_ids.shape[0]) as (model, kwargs):
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                      "position_ids": position_ids_from_mask(attention_mask), **kwargs}
            return self._predict(model, inputs, source, input_ids[rows, cols], (rows, cols), input_ids.shape,
                                 temperature, False, False).logprobs

    def _decode(self, input_ids, attention_mask, max_new_tokens, temperature, eos_token_id, pad_token_id,
                lean: bool, cache=None, keys=None, lookup: int = 0, row_seeds=None) -> Generation:
        # inference_mode, not no_grad: no version counters or view tracking on the thousands of
        # small tensors decoding makes (what it returns becomes Python lists, never autograd inputs)
        with torch.inference_mode():
            tokens, logprobs, lengths = decode(self.lm, input_ids, attention_mask, max_new_tokens, temperature,
                                               eos_token_id, pad_token_id, lean, cache, keys, lookup, row_seeds)
        return Generation(tokens.clone(), logprobs.clone(), lengths.clone())

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling, eos_token_id: int,
                 pad_token_id: int, synced_gpus: bool = False, cache=None, keys=None, row_seeds=None) -> Generation:
        """Sample from the full distribution (no top-k/top-p) so recorded logprobs are the
        policy's own: PPO's ratio then starts at exactly 1. ``sampling`` is a SamplingSpec.
        With the dynamic KV cache on one process (or unsharded), a short loop of our own decodes
        (``lorarl.decoding``): transformers' generate costs about a third more per token in
        bookkeeping that this case does not need, and for Qwen2 and Llama models each new token
        skips transformers' forward altogether (``sampling.lean_steps``). Static caches,
        compilation and lockstep decoding across sharded ranks (``synced_gpus``) go through
        transformers' generate. ``cache`` (a ``PrefixCache``) and ``keys`` (one episode id per row):
        prefixes computed before are reused, on the lean path (``lorarl.decoding``). ``row_seeds``
        (one per row): each row samples from its own stream, whatever rows share its batch, on
        our own loop; transformers' generate samples the batch from one stream."""
        greedy, temperature = sampling.greedy, sampling.temperature
        if sampling.cache == "dynamic" and not synced_gpus:
            return self._decode(input_ids, attention_mask, sampling.max_new_tokens, None if greedy else temperature,
                                eos_token_id, pad_token_id, sampling.lean_steps, cache, keys, sampling.prompt_lookup,
                                row_seeds)
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
    states it projects only the positions ``source`` (flat indices into [rows * width]) that
    predict the wanted tokens, a chunk at a time, and keeps log p of each wanted token and the
    entropy of its distribution; with gradients on, each chunk is recomputed in backward instead
    of kept (``torch.utils.checkpoint``), so no full [positions, vocabulary] tensor lives through
    the backward pass. It runs inside the model's forward, where sharded strategies have the
    head's weights whole.

    The model's forward then returns this head's small stand-in tensor as "logits"; a model that
    post-processes logits (soft-capping, scaling) would change it, which ``result`` detects: the
    caller then falls back to full logits for that forward (correct, without the memory saving)."""

    def __init__(self, model: nn.Module, source: torch.Tensor, targets: torch.Tensor, shape, temperature: float,
                 entropy_grad: bool = True):
        super().__init__()
        self.temperature, self.entropy_grad = temperature, entropy_grad
        self.source, self.targets, self.shape = source, targets, tuple(shape)
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
        if tuple(hidden.shape[:2]) != self.shape:  # not the forward we stand in for (e.g. a slice of positions)
            return self.head(hidden)
        self.hidden = hidden.reshape(-1, hidden.shape[-1])[self.source]  # [N, H]
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

    def result(self, returned: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(log p [N], entropy [N]); None when the model did not return this head's output as it
        was (it post-processes logits): the caller must then use full logits."""
        if self.out is None or returned is not self.out:
            return None
        return self.out[0, :, 0], self.out[0, :, 1]


def _scatter(per_token: torch.Tensor, at: tuple[torch.Tensor, torch.Tensor], shape) -> torch.Tensor:
    """[N] values -> [*shape] with them at ``at`` (rows, columns), zero elsewhere."""
    return per_token.new_zeros(tuple(shape)).index_put(at, per_token)


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
