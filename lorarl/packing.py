"""Micro-batches under a token budget, without padding waste, each shared prefix computed once.

Every training-side forward (PPO's prepare and update, the reference and value forwards, SFT)
runs its episodes as micro-batches of at most ``budget`` tokens (rows x width, padding included),
so peak memory depends on the budget, not on how many episodes there are or how long they run.

A micro-batch has rows of two kinds, never mixed:

- *plain* rows, one episode each, right-padded and sorted by length: causal attention needs no
  mask (a real token never sees the padding after it), so the model takes its fastest path;
- *tree* rows: episodes that share a prefix (a GRPO group's prompt, an env's instructions) laid
  out as their token trie in depth-first order, every trie node's tokens once. Each token's
  position id is its position in its episode, and a [rows, 1, width, width] mask lets it attend to
  its own ancestors only. Gradients reach the shared prefix from every episode that continues it:
  the sum the plain rows compute, with the prefix computed once (the Prefix Grouper method).

Whether a group of episodes shares its prefix is a cost decision (``CostModel``): linear layers
cost per token, attention per pair of tokens, and a masked row pays every pair (kernels skip the
causal upper triangle only without a mask). Sharing wins when the prefix is long next to what the
model spends per token; a tiny model with long byte-level prompts may keep its rows plain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CostModel:
    """Relative cost of a forward: ``per_token`` for each token through the linear layers,
    ``per_pair`` for each (query, key) pair of attention; only their ratio matters."""

    per_token: float
    per_pair: float

    @classmethod
    def of(cls, lm: torch.nn.Module) -> "CostModel":
        """From a causal LM's config: 2 FLOPs per weight of its decoder layers per token, 4 per
        attention width and layer per pair (scores and weighted sum)."""
        cfg = getattr(lm, "config", None)
        hidden, layers = getattr(cfg, "hidden_size", 0), getattr(cfg, "num_hidden_layers", 0)
        if not hidden or not layers:
            return cls(1.0, 0.0)  # unknown shape: count tokens only
        heads = getattr(cfg, "num_attention_heads", 1)
        head_dim = getattr(cfg, "head_dim", None) or hidden // heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        inter = getattr(cfg, "intermediate_size", 4 * hidden)
        weights = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + 3 * hidden * inter
        return cls(2.0 * weights * layers, 4.0 * heads * head_dim * layers)

    def plain(self, length: int) -> float:
        return self.per_token * length + self.per_pair * length * length / 2

    def tree(self, width: int) -> float:
        return self.per_token * width + self.per_pair * width * width


@dataclass
class MicroBatch:
    """One forward's inputs and where each episode's tokens sit in it.

    episodes:       long [E]        minibatch rows (episodes) this micro-batch holds
    input_ids:      long [R, W]
    position_ids:   long [R, W]     each token's position in its own episode
    attention_mask: bool [R, 1, W, W] or None (plain rows: causal, no mask needed)
    index:          long [E, T]     flat index (row * W + column) of each episode token; -1 past its end
    """

    episodes: torch.Tensor
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    index: torch.Tensor

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()

    def predictions(self, wanted: torch.Tensor, ids: torch.Tensor):
        """For the tokens ``wanted`` ([E, T] bool, t >= 1, aligned with the episodes' ``ids``):
        (flat index of the token that predicts each, its target id, its (episode, t))."""
        rows, cols = wanted.nonzero(as_tuple=True)
        return self.index[rows, cols - 1], ids[rows, cols], (rows, cols)


@dataclass
class _Unit:
    """Episodes that go into one row: one (plain) or a sharing group (tree)."""

    members: list[int]
    width: int  # tokens in the row
    tree: bool
    starts: list[int] = field(default_factory=list)  # per member: tokens it shares with the previous one


def plan(sequences: list[list[int]], budget: int, cost: CostModel, share: bool = True) -> list[list[_Unit]]:
    """Group episodes (token lists) into micro-batches of units, each micro-batch at most
    ``budget`` tokens (a unit longer than that gets one of its own)."""
    units = _units(sequences, budget, cost, share)
    batches: list[list[_Unit]] = []
    for kind in (False, True):
        mine = sorted((u for u in units if u.tree == kind), key=lambda u: u.width, reverse=True)
        current: list[_Unit] = []
        for u in mine:  # widest first: each micro-batch's rows are of similar width (little padding)
            if current and (len(current) + 1) * current[0].width > budget:
                batches.append(current)
                current = []
            current.append(u)
        if current:
            batches.append(current)
    return batches


def _units(sequences: list[list[int]], budget: int, cost: CostModel, share: bool) -> list[_Unit]:
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])  # a trie's depth-first order
    lcp = [0] + [common_prefix(sequences[a], sequences[b]) for a, b in zip(order, order[1:])]
    units, group = [], [0]
    for k in range(1, len(order) + 1):  # groups: runs of neighbours that share a prefix
        if k < len(order) and share and lcp[k] > 0:
            group.append(k)
            continue
        units += _split_group([order[g] for g in group], [lcp[g] for g in group], sequences, budget, cost)
        group = [k]
    return units


def _split_group(members: list[int], shared: list[int], sequences, budget: int, cost: CostModel) -> list[_Unit]:
    """A run of episodes in trie order: one tree row (or several, each within the budget) when
    sharing is cheaper than plain rows, else plain rows."""
    if len(members) == 1:
        return [_Unit(members, len(sequences[members[0]]), False, [0])]
    out, current, starts, width = [], [], [], 0
    for m, s in zip(members, shared):
        s = s if current else 0
        new = len(sequences[m]) - s
        if current and width + new > budget:
            out.append((current, starts, width))
            current, starts, width, s, new = [], [], 0, 0, len(sequences[m])
        current.append(m)
        starts.append(s)
        width += new
    out.append((current, starts, width))
    units = []
    for mem, st, w in out:
        if len(mem) > 1 and cost.tree(w) < sum(cost.plain(len(sequences[m])) for m in mem):
            units.append(_Unit(mem, w, True, st))
        else:
            units += [_Unit([m], len(sequences[m]), False, [0]) for m in mem]
    return units


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two sequences share from the start."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def build(units: list[_Unit], sequences: list[list[int]], pad_id: int, device) -> MicroBatch:
    """The tensors of one micro-batch."""
    width = max(u.width for u in units)
    R, tree = len(units), units[0].tree
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    mask = torch.zeros((R, 1, width, width), dtype=torch.bool) if tree else None
    episodes = [m for u in units for m in u.members]
    T = max(len(sequences[m]) for m in episodes)
    index = torch.full((len(episodes), T), -1, dtype=torch.long)
    e = 0
    for r, u in enumerate(units):
        path: list[int] = []  # packed columns of the previous member's tokens
        fill = 0
        for m, start in zip(u.members, u.starts):
            seq = sequences[m]
            cols = list(range(fill, fill + len(seq) - start))
            fill += len(cols)
            ids[r, cols] = torch.tensor(seq[start:], dtype=torch.long)
            pos[r, cols] = torch.arange(start, len(seq))
            path = path[:start] + cols
            index[e, : len(seq)] = torch.tensor(path) + r * width
            if mask is not None:  # each new token sees its ancestors and itself
                p = torch.tensor(path)
                new = torch.arange(start, len(seq))
                mask[r, 0, p[new][:, None], p[None, :]] = torch.arange(len(seq))[None, :] <= new[:, None]
            e += 1
        if mask is not None:
            pads = torch.arange(fill, width)
            mask[r, 0, pads, pads] = True  # a padding query sees itself (no row of the softmax is empty)
    return MicroBatch(torch.tensor(episodes), ids.to(device), pos.to(device),
                      None if mask is None else mask.to(device), index.to(device))


def micro_batches(input_ids: torch.Tensor, attention_mask: torch.Tensor, budget: int, cost: CostModel,
                  pad_id: int, share: bool = True) -> list[MicroBatch]:
    """The micro-batches of a right-padded batch ([B, T]): each episode's real tokens, planned."""
    lengths = attention_mask.sum(-1).tolist()
    sequences = [row[:n] for row, n in zip(input_ids.tolist(), lengths)]
    longest = max(lengths, default=0)
    if longest > budget:
        _warn_over_budget(longest, budget)
    return [build(units, sequences, pad_id, input_ids.device) for units in plan(sequences, budget, cost, share)]


def filler(input_ids: torch.Tensor) -> tuple[MicroBatch, torch.Tensor]:
    """(micro-batch, wanted tokens) of the first two tokens of a batch's first episode: a rank
    with fewer micro-batches than another runs it, weighted 0, so that the collectives of sharded
    strategies (one per forward or backward) pair up across ranks."""
    ids = input_ids[:1, :2]
    wanted = torch.zeros_like(ids, dtype=torch.bool)
    wanted[:, 1] = True
    return build(plan([ids[0].tolist()], 2, CostModel(1.0, 0.0))[0], [ids[0].tolist()], 0, ids.device), wanted


_warned: set[tuple[int, int]] = set()


def _warn_over_budget(longest: int, budget: int) -> None:
    if (longest, budget) not in _warned:
        _warned.add((longest, budget))
        log.warning("an episode of %d tokens is longer than the micro-batch budget of %d tokens: it runs alone, "
                    "over the budget (raise trainer.micro_batch_tokens, or lower max_context_tokens)", longest, budget)
