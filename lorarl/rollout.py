"""Online multi-turn rollout collection, token-in/token-out.

Each episode is one growing list of token ids. Sampled tokens are appended as generated (with
their sampling-time logprobs and action_mask True); environment replies are framed by the chat
template, tokenized once, and appended with action_mask False. The trajectory is never decoded
and re-tokenized: the ids trained on are exactly the ids sampled.

Episodes of a batch step in lockstep: each turn, all unfinished episodes are left-padded into
one batch and generated together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lorarl.policy import Policy
from lorarl.rewards import RewardTable
from lorarl.types import RolloutBatch


@dataclass
class SamplingSpec:
    max_new_tokens: int = 32  # per turn
    temperature: float = 1.0
    max_context_tokens: int = 2048  # an episode that would outgrow this ends as "context_limit"
    greedy: bool = False


@dataclass
class Episode:
    group_id: int
    seed: int
    token_ids: list[int] = field(default_factory=list)
    action_mask: list[bool] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # decoded view, for transcripts only
    outcome: str = ""
    task_type: str = "default"
    env_return: float = 0.0
    reward: float = 0.0
    turns: int = 0
    done: bool = False

    @property
    def trainable(self) -> bool:
        """An episode the environment failed says nothing about the policy: it is not trained on.
        (Rewarding or penalising it would teach the agent to break, or to avoid, the env.)"""
        return self.outcome != "env_error"

    def extend(self, ids: Sequence[int], is_action: bool, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids.extend(int(i) for i in ids)
        self.action_mask.extend([is_action] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))


class ChatFramer:
    """Turns env text into prompt tokens with the tokenizer's own chat template.

    The tokens between the assistant's end-of-turn token and the next generation prompt are
    found by rendering a two-turn conversation with a placeholder reply, so any ChatML-, Llama-
    or Mistral-style template works without hand-written role markers.
    """

    _PLACEHOLDER = "\u2063PLACEHOLDER\u2063"

    def __init__(self, tokenizer, system_prompt: str | None = None):
        self.tok = tokenizer
        self.system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.eos_id = tokenizer.eos_token_id

    def first(self, observation: str, history: Sequence[dict] = ()) -> list[int]:
        """The episode's prompt: system message, the env's earlier turns (``info["history"]``, e.g.
        AgentBench's instructions and one-shot example), then the observation as a user turn."""
        turns = [{"role": m["role"], "content": m["content"]} for m in history]
        return self._ids(self._render(self.system + turns + [{"role": "user", "content": observation}], True))

    def next(self, observation: str) -> list[int]:
        """Tokens that follow an assistant reply ending in eos: env turn + generation prompt."""
        msgs = self.system + [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": self._PLACEHOLDER},
            {"role": "user", "content": observation},
        ]
        text = self._render(msgs, True)
        end = self._PLACEHOLDER + self.tok.eos_token
        start = text.index(end) + len(end)
        return self._ids(text[start:])

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


class RolloutCollector:
    """Runs a batch of episodes on a fixed set of Gymnasium envs (one episode per env)."""

    def __init__(
        self,
        envs: Sequence,
        tokenizer,
        sampling: SamplingSpec,
        rewards: RewardTable,
        system_prompt: str | None = None,
    ):
        self.envs = list(envs)
        self.tok = tokenizer
        self.sampling = sampling
        self.rewards = rewards
        self.framer = ChatFramer(tokenizer, system_prompt)

    def collect(
        self,
        policy: Policy,
        seeds: Sequence[int],
        group_ids: Sequence[int],
        synced_gpus: bool = False,
        any_rank_active: Callable[[bool], bool] = bool,
        reset_options: Sequence[dict | None] | None = None,
    ) -> list[Episode]:
        """One episode per seed, on the first len(seeds) envs. Under sharded strategies every rank must join every generate():
        ``any_rank_active`` (an all-reduce) keeps a rank whose episodes are over stepping with a
        dummy row until all ranks are done. ``reset_options`` (e.g. ``{"task_index": i}``) lets an
        evaluation walk a task file in order instead of drawing tasks by seed."""
        if len(seeds) != len(group_ids) or len(seeds) > len(self.envs):
            raise ValueError(f"{len(seeds)} seeds and {len(group_ids)} groups for {len(self.envs)} envs")
        options = reset_options or [None] * len(seeds)
        episodes = [self._start(env, s, g, o) for env, s, g, o in zip(self.envs, seeds, group_ids, options)]
        device = next(policy.parameters()).device
        while any_rank_active(any(not e.done for e in episodes)):
            active = [i for i, e in enumerate(episodes) if not e.done]
            rows = [episodes[i].token_ids for i in active] or [[self.tok.eos_token_id]]
            ids, mask = _left_pad(rows, self.tok.pad_token_id, device)
            gen = policy.generate(
                ids, mask, self.sampling.max_new_tokens, self.sampling.temperature,
                self.tok.eos_token_id, self.tok.pad_token_id, self.sampling.greedy, synced_gpus,
            )
            for row, i in enumerate(active):
                n = int(gen.lengths[row])
                self._step(i, episodes[i], gen.tokens[row, :n].tolist(), gen.logprobs[row, :n].tolist())
        return episodes

    def _start(self, env, seed: int, group_id: int, options: dict | None = None) -> Episode:
        obs, info = env.reset(seed=seed, options=options)
        ep = Episode(group_id=group_id, seed=seed, task_type=str(info.get("task_type", "default")))
        history = list(info.get("history") or [])
        ep.extend(self.framer.first(obs, history), is_action=False)
        ep.messages.extend([*history, {"role": "user", "content": obs}])
        return ep

    def _step(self, index: int, ep: Episode, new_ids: list[int], new_logprobs: list[float]) -> None:
        ep.extend(new_ids, is_action=True, logprobs=new_logprobs)
        if not new_ids or new_ids[-1] != self.tok.eos_token_id:
            ep.extend([self.tok.eos_token_id], is_action=False)  # cut-off reply: close the turn
        reply = self.tok.decode(new_ids, skip_special_tokens=True)
        ep.messages.append({"role": "assistant", "content": reply})
        ep.turns += 1
        obs, reward, terminated, truncated, info = self.envs[index].step(reply)
        ep.env_return += float(reward)
        if terminated or truncated:
            return self._finish(ep, info.get("outcome", "correct" if reward > 0 else "incorrect"))
        follow = self.framer.next(obs)
        ep.messages.append({"role": "user", "content": obs})
        if len(ep.token_ids) + len(follow) + self.sampling.max_new_tokens > self.sampling.max_context_tokens:
            return self._finish(ep, "context_limit")
        ep.extend(follow, is_action=False)

    def _finish(self, ep: Episode, outcome: str) -> None:
        ep.outcome, ep.done = outcome, True
        ep.reward = self.rewards(outcome, ep.env_return)


def episodes_to_batch(episodes: Sequence[Episode], pad_id: int) -> RolloutBatch:
    """Right-pad episodes into the typed batch the update consumes."""
    B, T = len(episodes), max(len(e.token_ids) for e in episodes)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.bool)
    act = torch.zeros((B, T), dtype=torch.bool)
    logp = torch.zeros((B, T), dtype=torch.float32)
    for i, e in enumerate(episodes):
        n = len(e.token_ids)
        ids[i, :n] = torch.tensor(e.token_ids)
        attn[i, :n] = True
        act[i, :n] = torch.tensor(e.action_mask) & e.trainable
        logp[i, :n] = torch.tensor(e.logprobs)
    rewards = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
    # An untrainable episode gets a group of its own, so it does not move its group's baseline.
    groups = torch.tensor([e.group_id if e.trainable else -1 - i for i, e in enumerate(episodes)], dtype=torch.long)
    return RolloutBatch(ids, attn, act, logp, rewards, groups)
