"""Supervised fine-tuning on transcripts (``stage=sft``): a warm start for RL.

Each transcript is tokenized exactly as a rollout would hold it (``rollout.ChatFramer``): the
first prompt with the env's earlier turns, then each assistant reply's tokens and the end-of-turn
token (trained on: loss mask True), then each observation framed as the next user turn (not
trained on). So the token stream SFT teaches is the one RL later samples and scores. The loss is
the mean cross-entropy over the assistant tokens of a batch. The adapter is saved by the same
``AdapterCheckpoint`` as RL, so ``model.lora.lora_path=<checkpoint>`` starts RL from it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lorarl.checkpointing import trainable_only
from lorarl.packing import CostModel, filler
from lorarl.ppo import Batching
from lorarl.sharding import ShardingPlan, max_over_ranks
from lorarl.rollout import ChatFramer


@dataclass
class SFTSpec:
    epochs: int
    batch_size: int
    max_tokens: int
    holdout: float
    seed: int


def encode(messages: list[dict], prompt_turns: int, framer: ChatFramer, max_tokens: int) -> tuple[list[int], list[bool]]:
    """(token ids, loss mask) of one transcript, laid out as a rollout episode: the first
    ``prompt_turns`` messages are the env's prompt (earlier turns, then the first observation);
    an assistant turn marked ``"train": false`` is context, out of the loss."""
    tok = framer.tok
    ids = framer.first(messages[prompt_turns - 1]["content"], messages[: prompt_turns - 1])
    mask = [False] * len(ids)
    for m in messages[prompt_turns:]:
        if m["role"] == "assistant":
            reply = tok(m["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids, mask = ids + reply, mask + [m.get("train", True)] * len(reply)
        else:
            follow = framer.next(m["content"])
            ids, mask = ids + follow, mask + [False] * len(follow)
    return ids[:max_tokens], mask[:max_tokens]


class Transcripts(Dataset):
    def __init__(self, encoded: list[tuple[list[int], list[bool]]]):
        self.items = [e for e in encoded if any(e[1])]  # cut so far that nothing is left to learn: dropped

    @classmethod
    def encode(cls, data: list[tuple[list[dict], int]], framer: ChatFramer, max_tokens: int) -> "Transcripts":
        """(messages, prompt_turns) pairs as read from a transcripts file, each ``encode``d."""
        return cls([encode(m, p, framer, max_tokens) for m, p in data])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def collate(pad_id: int):
    def fn(batch):
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.bool)
        loss = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, (t, m) in enumerate(batch):
            ids[i, : len(t)] = torch.tensor(t)
            attn[i, : len(t)] = True
            loss[i, : len(m)] = torch.tensor(m)
        return ids, attn, loss
    return fn


def split(messages: list, holdout: float, seed: int):
    """(train, held out): a seeded shuffle, at least one transcript held out when asked for any."""
    order = list(range(len(messages)))
    random.Random(seed).shuffle(order)
    n_out = min(len(order) - 1, max(1, round(holdout * len(order)))) if holdout > 0 else 0
    return [messages[i] for i in order[n_out:]], [messages[i] for i in order[:n_out]]


def assistant_nll(policy, batching: Batching, batch, backward=None, scale: float = 1.0) -> torch.Tensor:
    """``scale`` x the mean cross-entropy over a collated batch's assistant tokens, a micro-batch at
    a time; ``backward(loss, last)`` runs on each micro-batch's share as soon as it is computed (its
    activations freed before the next). Returns the (detached) loss."""
    ids, attn, loss_mask = batch
    loss_mask = loss_mask.clone()
    loss_mask[:, 0] = False  # t = 0 has no prediction
    total = max(int(loss_mask.sum()), 1)
    micros = batching.split(ids, attn)
    loss = torch.zeros((), device=ids.device)
    for k, mb in enumerate(micros):
        if mb is None:  # another rank has more micro-batches: a forward (and backward) that changes nothing
            mb, wanted = filler(ids)
            part = policy.packed(mb, wanted, mb.input_ids).logprobs.sum() * 0.0
        else:
            wanted = loss_mask[mb.episodes]
            part = -policy.packed(mb, wanted, ids[mb.episodes]).logprobs.sum() / total
            part = part * scale if scale != 1.0 else part
        if backward is not None:
            backward(part, k == len(micros) - 1)
        loss = loss + part.detach()
    return loss


@dataclass
class Replay:
    """SFT beside RL (``sft.replay_coef``, PPO-ptx in InstructGPT's terms): every RL optimizer step
    also follows ``coef`` x the mean cross-entropy of ``batch_size`` transcripts drawn from
    ``items``. RL's gradient comes from the few tasks an iteration draws; the skills the warm start
    taught that those tasks do not exercise are held only by the KL term, and GRPO from a strong
    SFT adapter overwrote them (docs/learning.md). The replayed transcripts keep a gradient on them."""

    items: Transcripts
    batch_size: int
    coef: float
    pad_id: int

    def sampler(self, seed: int, device) -> Callable:
        """``step(policy, batching, backward) -> stats``: one optimizer step's replay loss, each
        micro-batch's share backpropagated through ``backward(loss)``. The draws depend only on
        ``seed`` (the run's seed, iteration and rank): a resumed run replays the same transcripts."""
        rng = random.Random(seed)
        pack = collate(self.pad_id)

        def step(policy, batching, backward) -> dict[str, float]:
            picked = rng.sample(range(len(self.items)), min(self.batch_size, len(self.items)))
            batch = tuple(t.to(device) for t in pack([self.items[i] for i in picked]))
            loss = assistant_nll(policy, batching, batch, lambda part, last: backward(part), self.coef)
            return {"train/replay_loss": float(loss) / self.coef}
        return step


class SFTModule(L.LightningModule):
    """Cross-entropy on assistant tokens. Exposes ``policy``, ``sharding``, ``last_stats`` and
    ``last_episodes`` like ``RLModule``, so the same checkpoint callback saves its adapter."""

    def __init__(self, policy, train: Dataset, val: Dataset, spec: SFTSpec, optim, pad_id: int, sharding=None,
                 micro_batch_tokens: int = 1 << 30, share_prefixes: bool = True):
        super().__init__()
        self.policy, self.train_set, self.val_set = policy, train, val
        self.spec, self.optim, self.pad_id = spec, optim, pad_id
        self.sharding = sharding or ShardingPlan()
        self.batching = Batching(micro_batch_tokens, CostModel.of(policy.lm), pad_id, share_prefixes, self._max_over_ranks)
        self.automatic_optimization = False  # one optimizer step per batch, over several micro-batches
        self.strict_loading = False
        self.last_stats: dict[str, float] = {}
        self.last_episodes: list = []
        self._tokens, self._start = 0, time.perf_counter()

    def configure_model(self) -> None:
        self.sharding.apply(self.policy, getattr(self, "device_mesh", None))

    def configure_optimizers(self):
        params = [p for p in self.policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.optim.lr, weight_decay=self.optim.weight_decay)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.spec.seed)
        return DataLoader(self.train_set, batch_size=self.spec.batch_size, shuffle=True, generator=g,
                          collate_fn=collate(self.pad_id))

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.spec.batch_size, collate_fn=collate(self.pad_id))

    def _loss(self, batch, backward=None) -> torch.Tensor:
        return assistant_nll(self.policy, self.batching, batch, backward)

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        self.sharding.before_backward(self, last)
        with self.sharding.backward_context(self, last):
            self.manual_backward(loss)

    def _max_over_ranks(self, n: int) -> int:
        return max_over_ranks(n, self.device)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self._loss(batch, self._backward)
        norm = self.sharding.clip_grad_norm(self.policy, self.optim.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self._tokens += int(batch[2].sum())
        rate = self._tokens / max(time.perf_counter() - self._start, 1e-9)
        logged = {"sft/loss": loss, "sft/tokens_per_s": rate, **({"sft/grad_norm": norm} if norm is not None else {})}
        self.log_dict(logged, on_step=True, prog_bar=False, sync_dist=True, batch_size=len(batch[0]))
        self.last_stats = {"sft/loss": float(loss), "sft/tokens_per_s": rate, **self._val_stats()}

    def _val_stats(self) -> dict[str, float]:
        val = self.trainer.callback_metrics.get("sft/val_loss")
        return {"sft/val_loss": float(val)} if val is not None else {}

    def validation_step(self, batch, batch_idx):
        with torch.no_grad():
            self.log("sft/val_loss", self._loss(batch), on_epoch=True, sync_dist=True, batch_size=len(batch[0]))

    def on_validation_epoch_end(self) -> None:
        self.last_stats.update(self._val_stats())  # before the epoch-end callbacks read it

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = trainable_only(self, checkpoint["state_dict"])

