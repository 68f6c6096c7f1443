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

Greedy decoding on the lean path can check several tokens per pass, drafted from each row's own
context (``_greedy_lookup``, ``algorithm.sampling.prompt_lookup``); sampling takes one per pass.

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
from lorarl.packing import common_prefix
from lorarl.prefix_cache import Entry, PrefixCache

# transformers' classes whose decoder layer is exactly: x + attn(norm(x)); x + mlp(norm(x)),
# attention = q/k/v projections, rotary on q and k, softmax attention, o projection.
LEAN_CLASSES = frozenset({"Qwen2ForCausalLM", "LlamaForCausalLM"})


def decode(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           temperature: float | None, eos: int, pad: int, lean: bool = True, cache: PrefixCache | None = None,
           keys: list | None = None, lookup: int = 0, row_seeds: list[int] | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` per row of a left-padded batch. ``temperature`` None:
    greedy. Rows that have emitted ``eos`` continue with ``pad`` (masked out of attention) until
    every row is done. Returns (new tokens [B, N], their logprobs under the full distribution at
    that temperature, lengths [B] with eos counted). ``lean`` False: the model's forward every step.
    ``cache`` (lean steps only): keys and values computed before, reused where a row starts with
    them, and what this call computes kept for the next turn of each row's episode (``keys``:
    one hashable id per row, the episode's). ``lookup`` (greedy, lean steps): up to this many
    tokens per step drafted from each row's own context and checked in the same pass
    (``_greedy_lookup``); the tokens are the same as one at a time. ``row_seeds`` (sampling): one
    seed per row, whose own random stream draws that row's tokens (``sample_rows``), so a row's
    reply does not depend on which rows share its batch; None: one stream for the batch."""
    # the adapters live in the base model's layers; PEFT's wrapper adds only per-call work
    lm = lm.get_base_model() if is_lora(lm) else lm
    if lean and lean_supported(lm):
        if cache is not None:
            cache.sync(lm)
        steps = _LeanSteps(lm, input_ids, attention_mask, max_new_tokens, cache, keys)
    else:
        steps = _HFSteps(lm, input_ids, attention_mask, max_new_tokens)
    if lookup > 0 and temperature is None and isinstance(steps, _LeanSteps):
        tokens, logprobs, lengths = _greedy_lookup(steps, max_new_tokens, eos, pad, lookup)
        steps.keep(tokens, lengths)
        return tokens, logprobs, lengths
    done = torch.zeros(input_ids.shape[0], 1, dtype=torch.bool, device=input_ids.device)
    streams = None
    if row_seeds is not None and temperature is not None:
        streams = [torch.Generator(device=input_ids.device).manual_seed(s) for s in row_seeds]
    tokens, logprobs = [], []
    logits = steps.first()
    for t in range(max_new_tokens):
        logp = torch.log_softmax(logits.float() if temperature in (None, 1.0) else logits.float() / temperature, dim=-1)
        if temperature is None:
            nxt = logp.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(logp.exp(), 1) if streams is None else sample_rows(logp, streams)
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
    if isinstance(steps, _LeanSteps):
        steps.keep(tokens, lengths)
    return tokens, torch.cat(logprobs, 1), lengths


def sample_rows(logp: torch.Tensor, streams: list[torch.Generator]) -> torch.Tensor:
    """One token per row of ``logp`` [B, V] (log-probabilities), drawn from the full distribution
    with row b's own generator: one uniform per row, placed in the row's cumulative distribution
    (inverse CDF, in float64). A row's tokens depend only on its seed and its own logits, whatever
    rows share the batch; one draw per row, no slower than torch.multinomial over the batch."""
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64, device=logp.device) for g in streams])
    cdf = logp.double().exp().cumsum(-1)
    # scaled by each row's total: the float sum of the probabilities is not exactly 1; "right":
    # a token of probability 0 (a flat step of the CDF) is never drawn
    return torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=logp.shape[-1] - 1)


def _greedy_lookup(steps: "_LeanSteps", max_new_tokens: int, eos: int, pad: int, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy decoding that checks drafted tokens in the pass that computes the next one (prompt
    lookup decoding): each step feeds a row's last token followed by up to ``k`` tokens that
    followed the latest earlier occurrence of its last few tokens in its own context (``_Drafts``);
    the drafts the model would have chosen itself are kept, plus the model's next token after
    them. An agent's replies copy a lot from their context (paths, names, the format of the
    one-shot example), and a pass over a few tokens per row costs little more than over one
    (reading the weights dominates), so a reply takes fewer passes; the tokens are the argmax of
    every position, as one at a time. Returns what ``decode`` returns."""
    B = len(steps.rows)
    drafts = [_Drafts(row) for row in steps.rows]
    out: list[list[int]] = [[] for _ in range(B)]
    logps: list[list[float]] = [[] for _ in range(B)]
    done = [False] * B

    def take(best, upto: list[int]) -> list[int]:
        """Append each row's argmax tokens (``best``: max of the logprobs [B, L]) at positions
        0..upto[b], stopping at eos or the limit; how many columns each row keeps."""
        tokens, lps = best.indices.tolist(), best.values.tolist()
        kept = [0] * B
        for b in range(B):
            if done[b]:
                continue
            for j in range(upto[b] + 1):
                out[b].append(tokens[b][j])
                logps[b].append(lps[b][j])
                if tokens[b][j] == eos or len(out[b]) == max_new_tokens:
                    done[b] = True
                    break
            kept[b] = upto[b] + 1
            drafts[b].add(out[b][len(drafts[b].seq) - len(steps.rows[b]):])
        return kept

    greedy = lambda logits: torch.log_softmax(logits.float(), dim=-1).max(-1)  # noqa: E731
    take(greedy(steps.first()[:, None]), [0] * B)
    while not all(done):
        guess = [[] if done[b] else drafts[b].next(min(k, max_new_tokens - len(out[b]) - 1)) for b in range(B)]
        L = 1 + max(map(len, guess))
        feed = torch.full((B, L), pad, dtype=torch.long)
        valid = torch.zeros(B, L, dtype=torch.bool)
        for b in range(B):
            if not done[b]:
                feed[b, : 1 + len(guess[b])] = torch.tensor([out[b][-1], *guess[b]])
                valid[b, : 1 + len(guess[b])] = True
        best = greedy(steps.extend(feed.to(steps.device), valid.to(steps.device)))
        predicted = best.indices.tolist()
        agree = [0] * B  # leading drafts equal to what the model predicts before each
        for b in range(B):
            while agree[b] < len(guess[b]) and guess[b][agree[b]] == predicted[b][agree[b]]:
                agree[b] += 1
        steps.accept(take(best, agree))
    N = max(map(len, out))
    tokens = torch.full((B, N), pad, dtype=torch.long)
    logprobs = torch.zeros(B, N)
    for b in range(B):
        tokens[b, : len(out[b])] = torch.tensor(out[b])
        logprobs[b, : len(out[b])] = torch.tensor(logps[b])
    lengths = torch.tensor([len(o) for o in out])
    return tokens.to(steps.device), logprobs.to(steps.device), lengths.to(steps.device)


class _Drafts:
    """A row's context, and the tokens that followed the latest earlier occurrence of its last
    ``n`` tokens (3, else 2, else 1): the draft of ``_greedy_lookup``."""

    N = 3

    def __init__(self, context: list[int]):
        self.seq: list[int] = []
        self.seen: list[dict[tuple, int]] = [{} for _ in range(self.N + 1)]  # n -> n-gram -> where what followed it starts
        self.add(context)

    def add(self, tokens: list[int]) -> None:
        start = len(self.seq)
        self.seq.extend(tokens)
        for end in range(max(1, start), len(self.seq)):  # an n-gram ending before ``end`` was followed by seq[end]
            for n in range(1, min(self.N, end) + 1):
                self.seen[n][tuple(self.seq[end - n: end])] = end

    def next(self, k: int) -> list[int]:
        for n in range(min(self.N, len(self.seq)), 0, -1):
            at = self.seen[n].get(tuple(self.seq[-n:]))
            if at is not None:
                return self.seq[at: at + k]
        return []


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
    [B, kv heads, prompt + new tokens, D] cache per layer: the prompts in one pass (``first``),
    then one token per row per step (``next``). Each row's prompt is right-aligned at column
    ``self.width``; new tokens append at the same column for every row.

    With a ``PrefixCache`` a row's prompt need not be computed in full: what an earlier turn of
    its episode computed, or a prefix shared by several episodes (computed once here when the
    fresh rows of a batch share ``min_shared`` tokens or more), is copied in, and only the rest
    is prefilled. Rows whose remaining work is identical (a GRPO group's copies of one prompt)
    are prefilled once."""

    def __init__(self, lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 cache: PrefixCache | None = None, keys: list | None = None):
        self.lm, self.body, self.device = lm, lm.model, input_ids.device
        self.layers = list(self.body.layers[: lm.config.num_hidden_layers])
        self.rows = [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask)]
        self.cache, self.row_keys = cache, keys if keys is not None else [None] * len(self.rows)
        self.max_new_tokens = max_new_tokens
        self.positions = torch.tensor([[len(r) - 1] for r in self.rows], device=self.device)
        self.length = 0  # columns of the cache filled so far
        self.holes = False  # columns that rejected drafts left (``accept``)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._layout(None)

    def _layout(self, base: Entry | None) -> None:
        """Where each row's tokens go: right-aligned at column ``self.width``. With a ``base`` (a
        prefix every row starts with), the cache holds only the tokens after it, and attention
        reads the base's keys and values once for all rows (``_cascade_attention``)."""
        self.base, self.skip = base, len(base.tokens) if base is not None else 0
        self.width = max(map(len, self.rows)) - self.skip
        self.valid = torch.zeros(len(self.rows), self.width + self.max_new_tokens, dtype=torch.bool, device=self.device)
        for i, row in enumerate(self.rows):
            self.valid[i, self.width - (len(row) - self.skip): self.width] = True

    def first(self) -> torch.Tensor:
        """Logits after each row's prompt, computing only what no entry of the cache holds."""
        sources = self._sources()
        self._layout(self._common_base(sources))
        todo = [(id(e) if e else None, tuple(row[c:])) for row, (e, c) in zip(self.rows, sources)]
        order = {key: n for n, key in enumerate(dict.fromkeys(todo))}  # distinct work, first seen first
        inverse = torch.tensor([order[t] for t in todo], device=self.device)
        rep = [todo.index(key) for key in order]
        logits = self._prefill([self.rows[i] for i in rep], [sources[i] for i in rep], self.valid.shape[1] - self.width)
        if self.cache is not None:
            self.cache.reused += sum(c for _, c in sources)
        if len(rep) < len(self.rows):
            self.keys = [k[inverse] for k in self.keys]
            self.values = [v[inverse] for v in self.values]
            logits = logits[inverse]
        return logits

    def _sources(self) -> list[tuple[Entry | None, int]]:
        """Per row, the longest cached prefix to start from: its episode's last turn, a shared
        prefix kept from earlier batches, or the prefix that this batch's other fresh rows share
        with it (computed here, once)."""
        if self.cache is None:
            return [(None, 0)] * len(self.rows)
        found = [self.cache.best(key, row) for key, row in zip(self.row_keys, self.rows)]
        if not self.cache.reuse:
            return found
        fresh = [i for i, (e, c) in enumerate(found) if len(self.rows[i]) - c > self.cache.min_shared]
        shared = self._shared_prefix([self.rows[i] for i in fresh]) if len(fresh) > 1 else None
        if shared is not None:
            for i in fresh:
                if len(shared.tokens) > found[i][1]:
                    found[i] = (shared, len(shared.tokens))
        return found

    def _common_base(self, sources: list[tuple[Entry | None, int]]) -> Entry | None:
        """The longest shared entry that every row starts with and takes from the cache whole
        (at least ``min_shared`` tokens), when there are several rows to read it for."""
        if self.cache is None or not self.cache.reuse or len(self.rows) < 2:
            return None
        fits = [e for e in self.cache.shared if len(e.tokens) >= self.cache.min_shared and all(
            c >= len(e.tokens) and tuple(row[: len(e.tokens)]) == e.tokens for row, (_, c) in zip(self.rows, sources))]
        return max(fits, key=lambda e: len(e.tokens), default=None)

    def _shared_prefix(self, rows: list[list[int]]) -> Entry | None:
        """The prefix all ``rows`` start with (at least ``min_shared`` tokens, and one short of the
        shortest row), computed once, from the longest stored prefix of it, and kept."""
        first, n = rows[0], min(map(len, rows)) - 1
        for other in rows[1:]:
            n = min(n, common_prefix(first, other))
        if n < self.cache.min_shared:
            return None
        prefix = first[:n]
        entry, c = self.cache.best(None, prefix + [-1])  # a stored prefix of it ([-1]: the whole of it may be stored)
        if c == n:
            return entry
        sub = _LeanSteps(self.lm, torch.tensor([prefix], device=self.device),
                         torch.ones(1, n, dtype=torch.long, device=self.device), 0, self.cache)
        sub._prefill([prefix], [(entry, c)], 0)
        self.cache.reused += c
        shared = Entry(tuple(prefix), [k[0] for k in sub.keys], [v[0] for v in sub.values])
        self.cache.put_shared(shared)
        return shared

    def _prefill(self, rows: list[list[int]], sources: list[tuple[Entry | None, int]], extra: int) -> torch.Tensor:
        """Fill a cache of len(rows) rows and ``self.width + extra`` columns: each row's cached
        part copied in, the rest computed; logits after each row's last token. The rows' new
        tokens run packed into one sequence, attention row by row: padding them to the longest
        would compute about twice what is new (a fresh task's prompt beside an observation)."""
        U, S, T = len(rows), self.width, self.width + extra
        new = [len(r) - c for r, (_, c) in zip(rows, sources)]
        cfg = self.lm.config
        kv, hd = cfg.num_key_value_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dtype = self.body.embed_tokens.weight.dtype
        # zeros, not empty: decoding steps read the left-padding columns (masked out; finite)
        self.keys = [torch.zeros(U, kv, T, hd, dtype=dtype, device=self.device) for _ in self.layers]
        self.values = [torch.zeros_like(k) for k in self.keys]
        P = self.skip  # tokens before it are the base's, not in this cache
        starts = [S - (len(row) - P) for row in rows]  # the column of each row's token P
        for u, (entry, c) in enumerate(sources):
            if entry is not None and c > P:
                for layer in range(len(self.layers)):
                    k, v = entry.span(layer, P, c)
                    self.keys[layer][u, :, starts[u]:starts[u] + c - P] = k
                    self.values[layer][u, :, starts[u]:starts[u] + c - P] = v
        ids = torch.tensor([t for row, (_, c) in zip(rows, sources) for t in row[c:]], device=self.device)[None]
        positions = torch.cat([torch.arange(c, len(row), device=self.device) for row, (_, c) in zip(rows, sources)])[None]
        # per row: its slice a:b of the packed sequence, its first column, and what its new tokens
        # see of its columns (causal, the cached part included)
        ends = torch.tensor(new).cumsum(0).tolist()
        spans = [(u, ends[u] - n, ends[u], starts[u],
                  torch.ones(n, S - starts[u], dtype=torch.bool, device=self.device).tril(S - starts[u] - n))
                 for u, n in enumerate(new)]
        if self.cache is not None:
            self.cache.computed += sum(new)
        self.length = S

        def attend(i: int, attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = []
            for u, a, b, start, seen in spans:
                self.keys[i][u, :, S - (b - a): S] = k[0, :, a:b]
                self.values[i][u, :, S - (b - a): S] = v[0, :, a:b]
                keys, values, mask = self.keys[i][u: u + 1, :, start:S], self.values[i][u: u + 1, :, start:S], seen[None, None]
                if self.base is not None:
                    keys, values, mask = _with_base(keys, values, mask, self.base.keys[i], self.base.values[i])
                out.append(F.scaled_dot_product_attention(q[:, :, a:b], keys, values, attn_mask=mask, scale=attn.scaling,
                                                          enable_gqa=keys.shape[1] != q.shape[1]))
            return torch.cat(out, 2)

        x = self._layers(ids, positions, attend)
        return self.lm.lm_head(self.body.norm(x[0, [e - 1 for e in ends]]))

    def next(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits after appending ``tokens`` [B]; ``valid`` [B] False masks a finished row's token."""
        return self.extend(tokens[:, None], valid[:, None])[:, 0]

    def extend(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Logits after each of ``tokens`` [B, L], appended in one pass (each sees the ones before
        it); ``valid`` [B, L] False: a column nothing sees (a finished row's, a draft's padding)."""
        col, L = self.length, tokens.shape[1]
        self._room(col + L)
        self.valid[:, col: col + L] = valid
        self.length, self._last = col + L, L
        positions = self.positions[:, -1:] + torch.arange(1, L + 1, device=self.device)
        self.positions = positions[:, -1:]
        visible = self.valid[:, None, None, : col + L].expand(-1, -1, L, -1)
        if L > 1:  # the new columns causally
            visible = visible & torch.ones(L, col + L, dtype=torch.bool, device=self.device).tril(col)

        def attend(i: int, attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.keys[i][:, :, col: col + L] = k
            self.values[i][:, :, col: col + L] = v
            keys, values = self.keys[i][:, :, : col + L], self.values[i][:, :, : col + L]
            if self.base is not None:  # the shared prefix read once for all rows
                return _cascade_attention(q, keys, values, visible, attn.scaling, self.base.keys[i], self.base.values[i])
            return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, scale=attn.scaling,
                                                  enable_gqa=keys.shape[1] != q.shape[1])

        x = self._layers(tokens, positions, attend)
        return self.lm.lm_head(self.body.norm(x))

    def accept(self, kept: list[int]) -> None:
        """After ``extend``: row b keeps the first ``kept[b]`` of the columns it appended (its fed
        token and accepted drafts); the rest become holes that no later token sees, and the row's
        next token takes the position after its last kept one."""
        L, keep = self._last, torch.tensor(kept, device=self.device)[:, None]
        self.valid[:, self.length - L: self.length] &= torch.arange(L, device=self.device)[None] < keep
        self.positions = self.positions - L + keep
        self.holes = True

    def _room(self, columns: int) -> None:
        """Grow the cache to at least ``columns`` (drafts that were rejected leave holes, so a
        reply can take more columns than it has tokens)."""
        have = self.valid.shape[1]
        if columns <= have:
            return
        more = max(columns - have, have // 2)
        self.keys = [F.pad(k, (0, 0, 0, more)) for k in self.keys]
        self.values = [F.pad(v, (0, 0, 0, more)) for v in self.values]
        self.valid = torch.cat([self.valid, self.valid.new_zeros(self.valid.shape[0], more)], 1)

    def keep(self, tokens: torch.Tensor, lengths: torch.Tensor) -> None:
        """Store, per row, what this call computed for its episode's next turn: the prompt and the
        reply but its last token (never fed back, so never computed)."""
        if self.cache is None:
            return
        for b, (row, key) in enumerate(zip(self.rows, self.row_keys)):
            if key is None:
                continue
            fed = int(lengths[b]) - 1
            covered = tuple(row) + tuple(tokens[b, :fed].tolist())
            start = self.width - (len(row) - self.skip)
            cols = slice(start, self.width + fed)
            if self.holes:  # the row's columns in order, without the ones rejected drafts left
                cols = (self.valid[b, start:].nonzero()[:, 0] + start)[: len(covered) - self.skip]
            self.cache.put_episode(key, Entry(covered, [k[b, :, cols] for k in self.keys],
                                              [v[b, :, cols] for v in self.values], self.base))

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, attend) -> torch.Tensor:
        """Hidden states after every layer for ``ids`` [B, L] at ``positions``. ``attend(layer
        index, attention module, q, k, v)`` (heads split, rotary applied: [B, heads, L, D]) stores
        the keys and values where they belong and returns the attention's output."""
        x = self.body.embed_tokens(ids)  # [B, L, H]
        cos, sin = self.body.rotary_emb(x, positions)
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, L, D]: broadcast over heads
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q, k = _heads(attn.q_proj(h), attn.head_dim), _heads(attn.k_proj(h), attn.head_dim)
            qk = _rotate(torch.cat([q, k], 1), cos, sin)  # one rotation for queries and keys
            q, k = qk[:, : q.shape[1]], qk[:, q.shape[1]:]
            o = attend(i, attn, q, k, _heads(attn.v_proj(h), attn.head_dim))
            x = x + attn.o_proj(o.transpose(1, 2).reshape(*x.shape[:2], -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return x


def _cascade_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor,
                       scale: float, base_keys: torch.Tensor, base_values: torch.Tensor) -> torch.Tensor:
    """Softmax attention of queries ``q`` [B, heads, L, D] (a decoding step: L = 1) over a prefix every row shares
    (``base_keys``/``base_values`` [kv heads, P, D], visible to every query) followed by each row's
    own ``keys``/``values`` [B, kv heads, T, D] where ``visible`` [B, 1, L, T]. The same as
    attending over the concatenation, but the shared prefix is read once for the whole batch, not
    once per row: decoding is bound by reading memory, and an env's instructions are most of a
    short episode's context. Grouped-query heads as transformers pairs them (head h reads kv head
    h // (heads / kv heads))."""
    B, H, L, D = q.shape
    kv, P, T = keys.shape[1], base_keys.shape[1], keys.shape[2]
    g = H // kv
    qg = q.reshape(B, kv, g * L, D)
    own = (qg @ keys.transpose(-1, -2)).view(B, kv, g, L, T).masked_fill(~visible[:, :, None], float("-inf"))
    shared = qg.transpose(0, 1).reshape(kv, B * g * L, D) @ base_keys.transpose(-1, -2)  # [kv, B g L, P]
    scores = torch.cat([shared.view(kv, B, g * L, P).transpose(0, 1), own.view(B, kv, g * L, T)], -1)
    probs = torch.softmax(scores.float() * scale, -1).to(q.dtype)
    out = probs[..., P:] @ values  # [B, kv, g L, D]
    out = out + (probs[..., :P].transpose(0, 1).reshape(kv, B * g * L, P) @ base_values).view(kv, B, g * L, D).transpose(0, 1)
    return out.view(B, H, L, D)


def _with_base(keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor, base_keys: torch.Tensor,
               base_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's keys, values and visibility with the shared prefix in front (a copy per row)."""
    B, P = keys.shape[0], base_keys.shape[1]
    wide = lambda base, own: torch.cat([base[None].expand(B, -1, -1, -1), own], 2)  # noqa: E731
    seen = torch.ones(*visible.shape[:-1], P, dtype=torch.bool, device=visible.device)
    return wide(base_keys, keys), wide(base_values, values), torch.cat([seen, visible], -1)


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[B, L, heads * D] -> [B, heads, L, D]."""
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as transformers applies it (rotate_half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
