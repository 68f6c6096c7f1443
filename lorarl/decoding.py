"""Token-by-token sampling with a KV cache, for one process holding whole weights.

One loop (``decode``) samples from the full distribution and records each token's logprob; a
*stepper* runs the model. Two steppers:

- ``_HFSteps`` calls the model's own forward every step (any architecture).
- ``_LeanSteps``, for transformers' own Qwen2 and Llama classes (most agent models), runs the
  prompt and then each new token through the model's own submodules (embedding, rotary,
  norms, projections, MLP, head) with the attention written out here: one preallocated cache
  tensor per layer and one scaled-dot-product call. Each distinct prompt is computed once (a
  GRPO group's episodes share theirs). A forward call of transformers costs about a
  millisecond of Python per token (mask building, cache bookkeeping, output capture, keyword
  plumbing) whatever the model's size; small models and short replies spend most of their
  rollout there. The submodules are the model's, so PEFT's LoRA wrappers (unmerged adapters),
  rotary scaling and dtypes are honoured as they are. ``algorithm.sampling.lean_steps=false``
  turns it off.

Both give the same tokens and logprobs up to float rounding (tests/unit/test_decoding.py); the
training-time logprob check compares every sampled token against the training forward anyway.
Sharded weights (FSDP2, ZeRO-3) and models in train mode use ``_HFSteps``.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from lorarl.lora import is_lora
from lorarl.ops import position_ids_from_mask

# transformers' classes whose decoder layer is exactly: x + attn(norm(x)); x + mlp(norm(x)),
# attention = q/k/v projections, rotary on q and k, softmax attention, o projection.
LEAN_CLASSES = frozenset({"Qwen2ForCausalLM", "LlamaForCausalLM"})


def decode(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           temperature: float | None, eos: int, pad: int,
           lean: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` per row of a left-padded batch. ``temperature`` None:
    greedy. Rows that have emitted ``eos`` continue with ``pad`` (masked out of attention) until
    every row is done. Returns (new tokens [B, N], their logprobs under the full distribution at
    that temperature, lengths [B] with eos counted). ``lean`` False: the model's forward every step."""
    # the adapters live in the base model's layers; PEFT's wrapper adds only per-call work
    lm = lm.get_base_model() if is_lora(lm) else lm
    stepper = _LeanSteps if lean and lean_supported(lm) else _HFSteps
    steps = stepper(lm, input_ids, attention_mask, max_new_tokens)
    done = torch.zeros(input_ids.shape[0], 1, dtype=torch.bool, device=input_ids.device)
    tokens, logprobs = [], []
    logits = steps.first()
    for t in range(max_new_tokens):
        logp = torch.log_softmax(logits.float() if temperature in (None, 1.0) else logits.float() / temperature, dim=-1)
        nxt = logp.argmax(-1, keepdim=True) if temperature is None else torch.multinomial(logp.exp(), 1)
        nxt = nxt.masked_fill_(done, pad)  # [B, 1]
        tokens.append(nxt)
        logprobs.append(logp.gather(-1, nxt))
        done = done | (nxt == eos)
        if t == max_new_tokens - 1 or bool(done.all()):
            break
        logits = steps.next(nxt[:, 0], ~done[:, 0])
    tokens = torch.cat(tokens, 1)
    # eos counted; a row cut off without one has max_new_tokens (a stop before that means every row ended)
    ended = tokens == eos
    lengths = torch.where(ended.any(1), ended.int().argmax(1) + 1, max_new_tokens)
    return tokens, torch.cat(logprobs, 1), lengths


def lean_supported(lm: nn.Module) -> bool:
    """Whether ``_LeanSteps`` computes exactly what this model's forward would: one of
    transformers' own ``LEAN_CLASSES`` (not remote code of the same name), full attention in
    every layer, eval mode (no attention dropout), whole unsharded weights."""
    cls = type(lm)
    if cls.__name__ not in LEAN_CLASSES or not cls.__module__.startswith("transformers.models.") or lm.training:
        return False
    if any(kind != "full_attention" for kind in getattr(lm.config, "layer_types", None) or ()):
        return False  # sliding-window layers
    if getattr(lm.config, "use_sliding_window", False) and getattr(lm.config, "sliding_window", None):
        return False  # older transformers: no layer_types, the window in the config
    # FSDP2 shards into DTensors, ZeRO-3 partitions (ds_id): their hooks gather per module call
    return not any(hasattr(p, "ds_id") or isinstance(p, _dtensor()) for p in lm.parameters())


@functools.lru_cache(maxsize=None)
def _dtensor() -> tuple[type, ...]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # builds without distributed
        return ()
    return (DTensor,)


@functools.lru_cache(maxsize=None)
def _cache_argument(model_class: type) -> str:
    """The KV cache's keyword: ``cache`` from transformers 5.24 (``past_key_values`` warns there),
    ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


class _HFSteps:
    """Every step through the model's forward, with transformers' dynamic cache."""

    def __init__(self, lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int):
        from transformers import DynamicCache

        self.lm, self.ids, self.mask = lm, input_ids, attention_mask.long()
        self.positions = position_ids_from_mask(self.mask)
        self.cache = DynamicCache(config=lm.config)

    def first(self) -> torch.Tensor:
        return self._forward(self.ids, self.positions)

    def next(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits after appending ``tokens`` [B]; ``valid`` [B] False masks a finished row's token."""
        self.mask = torch.cat([self.mask, valid.long()[:, None]], dim=1)
        self.positions = self.positions[:, -1:] + 1
        return self._forward(tokens[:, None], self.positions)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        out = self.lm(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
                      logits_to_keep=1, **{_cache_argument(type(self.lm)): self.cache})
        return out.logits[:, -1]


class _LeanSteps:
    """The model's submodules with the attention written out here, over one preallocated
    [B, kv heads, prompt + new tokens, D] cache per layer: the prompt in one pass (``first``),
    then one token per row per step (``next``)."""

    def __init__(self, lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int):
        self.lm, self.body, self.ids = lm, lm.model, input_ids
        self.layers = list(self.body.layers[: lm.config.num_hidden_layers])
        B, T = input_ids.shape
        self.positions = position_ids_from_mask(attention_mask)
        self.valid = torch.zeros(B, T + max_new_tokens, dtype=torch.bool, device=input_ids.device)
        self.valid[:, :T] = attention_mask.bool()
        self.length = 0  # tokens in the cache so far
        self.keys: list[torch.Tensor | None] = [None] * len(self.layers)
        self.values: list[torch.Tensor | None] = [None] * len(self.layers)

    def first(self) -> torch.Tensor:
        """The prompts, each distinct one once: a GRPO group's episodes share theirs, so its
        keys and values are computed once and copied to every row of the group."""
        T = self.ids.shape[1]
        known = self.valid[:, :T]
        rep, inverse = _distinct_rows(torch.cat([self.ids, known.long()], 1))
        causal = torch.ones(T, T, dtype=torch.bool, device=self.ids.device).tril()
        # A left-pad query sees only itself: a row with no visible key would be NaN, and NaN
        # in a pad position's keys and values would reach real tokens through 0 * NaN.
        visible = (causal & known[rep, None, None, :]) | torch.eye(T, dtype=torch.bool, device=self.ids.device)
        logits = self._forward(self.ids[rep], self.positions[rep], visible)
        if len(rep) == len(inverse) and torch.equal(inverse, torch.arange(len(inverse), device=inverse.device)):
            return logits  # every prompt distinct, in order: nothing to copy
        self.keys = [k[inverse] for k in self.keys]
        self.values = [v[inverse] for v in self.values]
        return logits[inverse]

    def next(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits after appending ``tokens`` [B]; ``valid`` [B] False masks a finished row's token."""
        self.valid[:, self.length] = valid
        self.positions = self.positions[:, -1:] + 1
        return self._forward(tokens[:, None], self.positions, self.valid[:, None, None, : self.length + 1])

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Logits of the last of ``ids`` [B, L] (at ``positions``), their keys and values
        cached after the ``self.length`` tokens already there; ``visible`` [B, 1, L, length + L]."""
        start, L = self.length, ids.shape[1]
        end = self.length = start + L
        x = self.body.embed_tokens(ids)  # [B, L, H]
        cos, sin = self.body.rotary_emb(x, positions)
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, L, D]: broadcast over heads
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q, k = _heads(attn.q_proj(h), attn.head_dim), _heads(attn.k_proj(h), attn.head_dim)
            qk = _rotate(torch.cat([q, k], 1), cos, sin)  # one rotation for queries and keys
            q, k = qk[:, : q.shape[1]], qk[:, q.shape[1]:]
            keys, values = self._cache(i, k)
            keys[:, :, start:end] = k
            values[:, :, start:end] = _heads(attn.v_proj(h), attn.head_dim)
            o = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=visible,
                                               scale=attn.scaling, enable_gqa=keys.shape[1] != q.shape[1])
            x = x + attn.o_proj(o.transpose(1, 2).reshape(*x.shape[:2], -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm.lm_head(self.body.norm(x[:, -1]))

    def _cache(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is None:
            shape = (*like.shape[:2], self.valid.shape[1], like.shape[3])
            self.keys[layer], self.values[layer] = like.new_empty(shape), like.new_empty(shape)
        return self.keys[layer], self.values[layer]


def _distinct_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the first row index of each distinct row [U], the distinct row of each row [B]): rows
    ``rows[rep][inverse]`` are ``rows``."""
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    order = torch.arange(rows.shape[0], device=rows.device)
    rep = torch.full((distinct.shape[0],), rows.shape[0], dtype=torch.long, device=rows.device)
    return rep.scatter_reduce(0, inverse, order, "amin"), inverse


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, L, heads * D] -> [B, heads, L, D]."""
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as transformers applies it (rotate_half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
