"""Online multi-turn rollout collection, token-in/token-out.

Each episode is one growing list of token ids. Sampled tokens are appended as generated (with
their sampling-time logprobs and action_mask True); environment replies are framed by the chat
template, tokenized once, and appended with action_mask False. The trajectory is never decoded
and re-tokenized: the ids trained on are exactly the ids sampled.

Each round, the episodes whose observation has arrived are left-padded into one batch and
generated together; env steps run on a thread pool meanwhile (``RolloutCollector``). With more
episodes than envs, an env whose episode ended starts the next one before the next round, so
rounds stay full until the last episodes (continuous batching).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from lorarl.policy import Policy
from lorarl.prefix_cache import PrefixCache
from lorarl.rewards import RewardTable
from lorarl.specs import SamplingSpec
from lorarl.types import RolloutBatch

log = logging.getLogger(__name__)


def stream_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a hash: nearby inputs give unrelated seeds)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


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
    started: float = 0.0  # time.monotonic() at reset
    duration_s: float = 0.0  # wall-clock time from reset to the end
    env_s: float = 0.0  # time spent inside the env's own reset and steps (the episode's time budget counts this)
    env_call_since: float | None = None  # time.monotonic() when the env call now running began
    prompt_turns: int = 1  # messages[:prompt_turns] are the env's prompt (earlier turns + first observation)
    verdict: dict = field(default_factory=dict)  # the env's last observation, and reference/error/judge_error
    sample: int = 0  # its number among its task's episodes (an evaluation's pass@k samples)
    noise_key: int | None = None  # its sampling draws from its own stream (stream_seed(key, turn)); None: the batch's

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
        self._prompts: dict[tuple, list[int]] = {}
        self.tok = tokenizer
        self.system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        self.eos_id = tokenizer.eos_token_id

    def first(self, observation: str, history: Sequence[dict] = ()) -> list[int]:
        """The episode's prompt: system message, the env's earlier turns (``info["history"]``, e.g.
        AgentBench's instructions and one-shot example), then the observation as a user turn.
        Remembered per text: a GRPO group's episodes, and an env's repeated instructions, render
        and tokenize once."""
        key = (observation, tuple((m["role"], m["content"]) for m in history))
        if key not in self._prompts:
            turns = [{"role": r, "content": c} for r, c in key[1]]
            if len(self._prompts) >= 4096:
                self._prompts.clear()
            self._prompts[key] = self._ids(self._render(self.system + turns + [{"role": "user", "content": observation}], True))
        return list(self._prompts[key])

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


def _finite(seconds: float) -> float | None:
    return None if seconds == float("inf") else seconds


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


VERDICT_KEYS = ("expected", "reference", "error", "judge_error")  # what an env's final info says about the judging


class _Reset(NamedTuple):
    """A reset's result, told apart from a step's 5-tuple by type (never by a key in the env's info)."""
    obs: str
    info: dict


class _Slots:
    """Which env plays which episode, and the env calls in flight. An env is free once its
    episode has ended and its last call has returned (a step abandoned at the time budget still
    runs on it)."""

    def __init__(self, n_envs: int, n_episodes: int):
        self.n_episodes = n_episodes
        self.env_of: dict[int, int] = {}  # episode index -> env index
        self.playing: list[int | None] = [None] * n_envs  # env index -> episode index
        self.last_call: list = [None] * n_envs  # env index -> its latest future
        self.pending: dict = {}  # future -> episode index
        self.abandoned: list = []
        self.started = 0

    def free(self, episodes: list[Episode]) -> list[int]:
        return [env for env, i in enumerate(self.playing)
                if (i is None or episodes[i].done) and (self.last_call[env] is None or self.last_call[env].done())]

    def start_next(self, env: int) -> int | None:
        """The next episode, on ``env``; None when every episode has started."""
        if self.started == self.n_episodes:
            return None
        i, self.started = self.started, self.started + 1
        self.env_of[i], self.playing[env] = env, i
        return i

    def submit(self, pool: ThreadPoolExecutor, i: int, fn, *args) -> None:
        future = pool.submit(fn, *args)
        self.pending[future] = i
        self.last_call[self.env_of[i]] = future

    def abandon(self, future) -> None:
        self.pending.pop(future)
        self.abandoned.append(future)


class RolloutCollector:
    """Runs episodes on a fixed set of Gymnasium envs (one episode per env at a time; an env
    whose episode ended takes the next one).

    Generation is batched on the calling thread; env resets and steps run on a thread pool
    (``step_workers``; SQLite workers and sandboxes wait outside the GIL). By default each round
    waits for the step of every live episode, so the rounds are the same in every run (the same
    episodes batched together, in index order) and sampling, and a resumed run, are exactly
    reproducible whatever the machine's load. ``straggler_timeout_s`` (opt-in) instead waits at
    most that long, then generates for the episodes whose observation has arrived: a slow env
    delays only its own episode, but which episodes share a batch then depends on timing, and so
    do the sampled tokens. An episode's limits are the env's (rounds) and the context's (tokens);
    ``episode_timeout_s`` bounds only the time spent inside the env's own reset and steps (a
    command or query that hangs), never the policy's generation or other episodes' turns, so a
    slow model or a busy machine does not change an outcome. An episode past it ends
    ``task_limit_reached``, with a warning. Tokenizing stays on the calling thread.
    """

    def __init__(self, envs: Sequence, tokenizer, sampling: SamplingSpec, rewards: RewardTable,
                 system_prompt: str | None = None, episode_timeout_s: float = float("inf"), step_workers: int = 0,
                 straggler_timeout_s: float | None = None):
        self.envs = list(envs)
        self.tok = tokenizer
        self.sampling = sampling
        self.rewards = rewards
        self.framer = ChatFramer(tokenizer, system_prompt)
        self.episode_timeout_s, self.straggler_timeout_s = episode_timeout_s, straggler_timeout_s
        self.pool = ThreadPoolExecutor(max_workers=step_workers or max(1, len(self.envs)),
                                       thread_name_prefix="env-step")
        self.timing = {"generate_s": 0.0, "env_wait_s": 0.0}  # of the last collect(): where its time went
        self.prefill: dict[str, float] = {}  # of the last collect() (or evaluation): prompt tokens computed and reused

    def close(self, close_envs: bool = True) -> None:
        """Stop the stepping threads and close the envs (their SQLite workers, sandboxes and
        pipes): a process that runs many trainings (a sweep, a notebook, a bench) would otherwise
        keep every run's workers and file descriptors. ``close_envs`` False: the envs are shared
        with another collector. Safe to call twice."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        for env in self.envs if close_envs else ():
            try:
                env.close()
            except Exception as e:  # one env's failure to close must not keep the others open
                log.warning("closing env %s: %s", type(env).__name__, e)

    def batch(self, episodes: Sequence["Episode"]) -> RolloutBatch:
        """The typed training batch of these episodes (right-padded with this tokenizer's pad id)."""
        return episodes_to_batch(episodes, self.tok.pad_token_id)

    def collect(
        self,
        policy: Policy,
        seeds: Sequence[int],
        group_ids: Sequence[int],
        synced_gpus: bool = False,
        any_rank_active: Callable[[bool], bool] = bool,
        reset_options: Sequence[dict | None] | None = None,
        prefix_cache: PrefixCache | None = None,
        on_finished: Callable[[list[Episode]], None] | None = None,
        noise_keys: Sequence[int] | None = None,
    ) -> list[Episode]:
        """One episode per seed, at most ``len(self.envs)`` at a time: an env whose episode has
        ended starts the next seed's episode before the next generation (continuous batching),
        so a batch is not left to its longest episodes while tasks remain. Episodes are returned
        in seed order. Under sharded strategies every rank must join every generate():
        ``any_rank_active`` (an all-reduce) keeps a rank with nothing to generate stepping with a
        dummy row until all ranks are done. ``reset_options`` (e.g. ``{"task_index": i}``) lets an
        evaluation walk a task file in order instead of seeding. ``prefix_cache``: keys and values
        computed before, reused (an evaluation passes one for all its tasks); by default one for
        this call, of ``sampling.prefix_cache_mb``. ``on_finished(episodes)``: called with the
        episodes that ended, as they end (evaluate.py saves them). ``noise_keys`` (one per episode):
        each episode samples its replies from its own random stream (seeded from its key and turn),
        so what it samples does not depend on which episodes share its batches: an evaluation
        resumed, or run with another batch size, samples the same episodes, and two models given
        the same keys meet the same noise (paired comparisons are less noisy). None: the batch
        samples from torch's global stream."""
        if len(seeds) != len(group_ids) or (noise_keys is not None and len(noise_keys) != len(seeds)):
            raise ValueError(f"{len(seeds)} seeds, {len(group_ids)} groups and {len(noise_keys or [])} noise keys")
        options = list(reset_options or [None] * len(seeds))
        keys = list(noise_keys) if noise_keys is not None else [None] * len(seeds)
        episodes = [Episode(group_id=g, seed=s, noise_key=k) for s, g, k in zip(seeds, group_ids, keys)]
        run = _Slots(len(self.envs), len(episodes))
        ready: list[int] = []
        device = next(policy.parameters()).device
        self.timing = {"generate_s": 0.0, "env_wait_s": 0.0}
        cache = prefix_cache if prefix_cache is not None else self.new_prefix_cache()
        counted = cache.stats()
        reported: set[int] = set()

        def report() -> None:
            """Hand over the episodes that ended since the last call; their cache entries go."""
            ended = [i for i, e in enumerate(episodes) if e.done and i not in reported]
            reported.update(ended)
            for i in ended:
                cache.end_episode(id(episodes[i]))
            if ended and on_finished is not None:
                on_finished([episodes[i] for i in ended])

        def settle() -> None:
            """Report the episodes that ended (before a reset that may take long), start episodes
            on the envs they freed and take in those resets; again while episodes end at reset."""
            report()
            while self._refill(run, episodes, options):
                self._settle(run, episodes, ready, bool(ready) or synced_gpus)
                report()

        settle()
        while any_rank_active(any(not e.done for e in episodes)):
            if run.pending:
                self._settle(run, episodes, ready, bool(ready) or synced_gpus)
            settle()
            ready = sorted(i for i in ready if not self._out_of_time(episodes[i]))
            if not (ready or synced_gpus):
                continue
            rows = [episodes[i].token_ids for i in ready] or [[self.tok.eos_token_id]]
            ids, mask = _left_pad(rows, self.tok.pad_token_id, device)
            started = time.perf_counter()
            own = ready and noise_keys is not None
            gen = policy.generate(ids, mask, self.sampling, self.tok.eos_token_id, self.tok.pad_token_id, synced_gpus,
                                  cache, [id(episodes[i]) for i in ready] if ready else None,
                                  row_seeds=[stream_seed(episodes[i].noise_key, episodes[i].turns) for i in ready]
                                  if own else None)
            self.timing["generate_s"] += time.perf_counter() - started
            for row, i in enumerate(ready):
                n = int(gen.lengths[row])
                reply = self._act(episodes[i], gen.tokens[row, :n].tolist(), gen.logprobs[row, :n].tolist())
                run.submit(self.pool, i, _timed, episodes[i], self.envs[run.env_of[i]].step, reply)
            ready = []
        report()  # episodes ended by their time budget in the last round
        wait([*run.pending, *run.abandoned])  # an episode ended by its time budget still owns its env until the step returns
        self.prefill = {k: v - counted.get(k, 0.0) for k, v in cache.stats().items() if k != "prefill_reused_share"}
        return episodes

    def _refill(self, run: "_Slots", episodes: list[Episode], options: list[dict | None]) -> bool:
        """Reset a free env for each episode not started, while there are both; True if any."""
        started = False
        for env in run.free(episodes):
            i = run.start_next(env)
            if i is None:
                break
            run.submit(self.pool, i, _timed, episodes[i], self._reset, self.envs[env], episodes[i].seed, options[i])
            started = True
        return started

    def _settle(self, run: "_Slots", episodes: list[Episode], ready: list[int], can_generate: bool) -> None:
        """Wait for env calls in flight (``_wait``), end the episodes past their time budget, and
        take in the results that arrived, in episode order; episodes to reply join ``ready``."""
        waited = time.perf_counter()
        self._wait(run.pending, episodes, can_generate)
        self.timing["env_wait_s"] += time.perf_counter() - waited
        for future, i in [(f, i) for f, i in run.pending.items() if not f.done()]:
            if self._out_of_time(episodes[i]):
                run.abandon(future)
        for future, i in sorted([(f, i) for f, i in run.pending.items() if f.done()], key=lambda fi: fi[1]):
            del run.pending[future]
            if self._absorb(episodes[i], future):
                ready.append(i)

    def new_prefix_cache(self) -> PrefixCache:
        """A prefix cache of ``sampling.prefix_cache_mb``; with 0, one that only counts the tokens
        prefilled (the ``perf/prefill_*`` figures of every run)."""
        mb = self.sampling.prefix_cache_mb
        return PrefixCache(mb << 20, reuse=mb > 0)

    def _wait(self, pending: dict, episodes: list["Episode"], can_generate: bool) -> None:
        """Wait for the env steps in flight: all of them (reproducible), up to the first episode's
        time budget; or, with a straggler timeout, up to it, then for at least one."""
        if self.straggler_timeout_s is None:
            left = [self.episode_timeout_s - _env_time(episodes[i]) for i in pending.values()]
            wait(pending, timeout=_finite(max(0.0, min(left, default=self.episode_timeout_s))))
            return
        wait(pending, timeout=_finite(self.straggler_timeout_s))
        if not any(f.done() for f in pending) and not can_generate:
            wait(pending, return_when=FIRST_COMPLETED)  # only stragglers left: the first of them

    @staticmethod
    def _reset(env, seed: int, options: dict | None) -> _Reset:
        return _Reset(*env.reset(seed=seed, options=options))

    def _absorb(self, ep: Episode, future) -> bool:
        """Take an env's reset or step result into the episode; True when the agent is to reply."""
        if ep.done:
            return False  # ended by its time budget while this step ran
        try:
            return self._take(ep, future.result())
        except Exception as e:  # noqa: BLE001  a broken env (or a result it cannot frame) must not stop the batch
            log.warning("env failed in episode seed=%s: %s: %s", ep.seed, type(e).__name__, e)
            self._finish(ep, "env_error")
            return False

    def _take(self, ep: Episode, result) -> bool:
        if isinstance(result, _Reset):
            return self._start(ep, result.obs, result.info)
        obs, reward, terminated, truncated, info = result
        ep.env_return += float(reward)
        if terminated or truncated:
            # The env's last word (its verdict) is kept apart: messages hold what the policy saw.
            ep.verdict = {"observation": obs, **{k: str(info[k]) for k in VERDICT_KEYS if k in info}}
            self._finish(ep, info.get("outcome", "correct" if reward > 0 else "incorrect"))
            return False
        follow = self.framer.next(obs)
        ep.messages.append({"role": "user", "content": obs})
        if not self._fits(len(ep.token_ids) + len(follow)):
            self._finish(ep, "context_limit")
            return False
        ep.extend(follow, is_action=False)
        return True

    def _start(self, ep: Episode, obs: str, info: dict) -> bool:
        ep.task_type = str(info.get("task_type", "default"))
        history = list(info.get("history") or [])
        prompt = self.framer.first(obs, history)
        ep.extend(prompt, is_action=False)
        ep.messages.extend([*history, {"role": "user", "content": obs}])
        ep.prompt_turns = len(history) + 1
        if not self._fits(len(prompt)):
            self._finish(ep, "context_limit")  # the first prompt alone does not fit
            return False
        return True

    def _fits(self, context_tokens: int) -> bool:
        """Room left for a whole reply after ``context_tokens``."""
        return context_tokens + self.sampling.max_new_tokens <= self.sampling.max_context_tokens

    def _act(self, ep: Episode, new_ids: list[int], new_logprobs: list[float]) -> str:
        ep.extend(new_ids, is_action=True, logprobs=new_logprobs)
        if not new_ids or new_ids[-1] != self.tok.eos_token_id:
            ep.extend([self.tok.eos_token_id], is_action=False)  # cut-off reply: close the turn
        reply = self.tok.decode(new_ids, skip_special_tokens=True)
        ep.messages.append({"role": "assistant", "content": reply})
        ep.turns += 1
        return reply

    def _out_of_time(self, ep: Episode) -> bool:
        if ep.done or _env_time(ep) <= self.episode_timeout_s:
            return False
        log.warning("episode seed=%s: its env spent more than env.episode_timeout_s=%gs in its own reset and steps "
                    "(a command or query that hangs; the policy's time is not counted); it ends task_limit_reached",
                    ep.seed, self.episode_timeout_s)
        self._finish(ep, "task_limit_reached")
        return True

    def _finish(self, ep: Episode, outcome: str) -> None:
        ep.outcome, ep.done = outcome, True
        ep.duration_s = time.monotonic() - ep.started if ep.started else 0.0
        ep.reward = self.rewards(outcome, ep.env_return)


def _timed(ep: Episode, call, *args):
    """Run an env call on a stepping thread, adding its duration to the episode's env time."""
    start = time.monotonic()
    if not ep.started:
        ep.started = start
    ep.env_call_since = start
    try:
        return call(*args)
    finally:
        ep.env_s += time.monotonic() - start
        ep.env_call_since = None


def _env_time(ep: Episode) -> float:
    """The episode's env time so far, the call now running included."""
    since = ep.env_call_since
    return ep.env_s + (time.monotonic() - since if since is not None else 0.0)


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


def format_transcript(ep: Episode) -> str:
    """Markdown view of an episode for TensorBoard's text tab."""
    head = f"**task** seed={ep.seed} type={ep.task_type} · **outcome** {ep.outcome} · **reward** {ep.reward:.3f}\n\n"
    body = "\n\n".join(f"**{m['role']}**:\n\n    " + m["content"].replace("\n", "\n    ") for m in ep.messages)
    return head + body
