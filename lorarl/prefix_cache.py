"""Keys and values of token prefixes the lean decoder already computed, reused while the weights
stay the same (``lorarl.decoding``).

Two kinds of entries:

- *episode* entries: everything an episode's last turn computed (its prompt, and its reply but for
  the last sampled token, which was never fed back). Its next turn starts with exactly those
  tokens (rollouts are token-in/token-out), so it prefills only what came after: the reply's last
  token, the end of turn and the new observation. Dropped when the episode ends.
- *shared* entries: a prefix that several episodes start with (an env's instructions and
  one-shot example), computed once and kept across the batches of one evaluation or iteration.

An entry is reused only for a row whose tokens start with the entry's tokens, and only while the
policy's weights are the ones that computed it: every parameter's storage and version counter
(bumped by each in-place update, such as an optimizer step) is compared at each use, and any
change empties the cache. Memory is bounded by ``budget_bytes``: past it, the oldest entries go
(their rows prefill in full, as without a cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Entry:
    tokens: tuple[int, ...]
    keys: list[torch.Tensor]  # per layer [kv heads, tokens after base's, head dim] (views into a decode's cache)
    values: list[torch.Tensor]
    base: "Entry | None" = None  # a shared prefix whose keys and values this entry's tokens start with

    def span(self, layer: int, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [kv heads, b - a, head dim] of tokens a..b-1 at ``layer``."""
        p = len(self.base.tokens) if self.base is not None else 0
        if a >= p:
            return self.keys[layer][:, a - p:b - p], self.values[layer][:, a - p:b - p]
        kb, vb = self.base.span(layer, a, min(b, p))
        if b <= p:
            return kb, vb
        return torch.cat([kb, self.keys[layer][:, : b - p]], 1), torch.cat([vb, self.values[layer][:, : b - p]], 1)

    def storages(self) -> dict[int, int]:
        """{storage address: bytes} of the tensors this entry keeps alive (a view keeps its whole cache)."""
        own = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in (*self.keys, *self.values)}
        return {**(self.base.storages() if self.base is not None else {}), **own}


class PrefixCache:
    """``reuse`` False: nothing is kept or reused; only the prefill tokens are counted (the
    decoder as it was before the cache, measurable)."""

    def __init__(self, budget_bytes: int, min_shared: int = 32, reuse: bool = True):
        self.budget_bytes, self.min_shared, self.reuse = budget_bytes, min_shared, reuse
        self.episodes: dict[object, Entry] = {}
        self.shared: list[Entry] = []
        self.fingerprint: tuple | None = None
        self.held: list[torch.Tensor] = []
        self.computed = self.reused = 0  # prompt tokens prefilled, and taken from the cache instead

    def sync(self, model: torch.nn.Module) -> None:
        """Forget everything if any weight changed since the entries were computed."""
        params = list(model.parameters())
        now = tuple((p.data_ptr(), p._version) for p in params)
        if now != self.fingerprint:
            self.episodes.clear()
            self.shared.clear()
            self.fingerprint = now
            # the storages stay alive while compared against: a tensor made later (the merged
            # weights of the next policy version) cannot take the same address and pass as them
            self.held = [p.detach() for p in params]

    def best(self, key, tokens: list[int]) -> tuple[Entry | None, int]:
        """The longest entry that ``tokens`` start with (leaving at least one token to compute):
        this episode's own, or a shared one; (entry, its length)."""
        if not self.reuse:
            return None, 0
        found = [e for e in [self.episodes.get(key), *self.shared]
                 if e is not None and len(e.tokens) < len(tokens) and tuple(tokens[: len(e.tokens)]) == e.tokens]
        entry = max(found, key=lambda e: len(e.tokens), default=None)
        return entry, (len(entry.tokens) if entry else 0)

    def put_episode(self, key, entry: Entry) -> None:
        if not self.reuse:
            return
        self.episodes.pop(key, None)
        self.episodes[key] = entry  # newest last: eviction takes the oldest
        self._fit()

    def put_shared(self, entry: Entry) -> None:
        if not self.reuse:
            return
        self.shared.append(entry)
        self._fit()

    def end_episode(self, key) -> None:
        """The episode is over: its entry goes (shared prefixes stay)."""
        self.episodes.pop(key, None)

    def stats(self) -> dict[str, float]:
        total = self.computed + self.reused
        return {"prefill_tokens_computed": float(self.computed), "prefill_tokens_reused": float(self.reused),
                "prefill_reused_share": self.reused / total if total else 0.0}

    def nbytes(self) -> int:
        """Memory the entries keep alive (each storage once)."""
        alive: dict[int, int] = {}
        for e in [*self.episodes.values(), *self.shared]:
            alive.update(e.storages())
        return sum(alive.values())

    def _fit(self) -> None:
        while self.episodes or self.shared:
            if self.nbytes() <= self.budget_bytes:
                return
            if self.episodes:
                self.episodes.pop(next(iter(self.episodes)))
            else:
                self.shared.pop(0)
