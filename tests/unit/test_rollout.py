"""Token-in/token-out rollouts: masks, framing and logprobs on a real two-turn episode."""

import time
from dataclasses import replace

import gymnasium as gym
import pytest
import torch

import envs  # noqa: F401
from lorarl.lora import apply_lora
from lorarl.policy import Policy
from lorarl.rollout import ChatFramer, RolloutCollector, episodes_to_batch


def _runs(mask):
    """[(is_action, start, end)] of consecutive equal mask values."""
    out, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append((mask[start], start, i))
            start = i
    return out


def test_two_turn_episode_masks_and_framing(tiny_tokenizer, tiny_lm, defaults):
    torch.manual_seed(0)
    tok = tiny_tokenizer
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    env = gym.make("lorarl/TargetWord-v0", words=["zzzz"], max_turns=2)  # a random model never says zzzz
    collector = RolloutCollector([env], tok, replace(defaults.algorithm.sampling, max_new_tokens=5), defaults.reward)
    (ep,) = collector.collect(policy, seeds=[3], group_ids=[0])
    assert ep.turns == 2 and ep.outcome == "incorrect"
    framer = ChatFramer(tok)
    first = framer.first("Reply with exactly this word: zzzz")
    runs = _runs(ep.action_mask)
    kinds = [k for k, _, _ in runs]
    assert kinds == [False, True, False, True, False] or kinds == [False, True, False, True]
    # prompt tokens are exactly the chat-framed observation
    assert ep.token_ids[: runs[0][2]] == first
    # between the turns: (eos if the reply was cut) + env reply framed as a user turn
    follow = framer.next("Wrong, reply with exactly: zzzz")
    _, s, e = runs[2]
    between = ep.token_ids[s:e]
    assert between[-len(follow):] == follow
    assert between[: len(between) - len(follow)] in ([], [tok.eos_token_id])
    # sampled logprobs sit on action tokens only, and match a recomputation
    batch = episodes_to_batch([ep], tok.pad_token_id)
    assert batch.old_logprobs[~batch.action_mask].abs().sum() == 0
    out = policy(batch.input_ids, batch.attention_mask)
    dev = ((out.logprobs - batch.old_logprobs).abs() * batch.action_mask).max()
    assert dev < 1e-4
    assert batch.action_mask.sum() == sum(e - s for k, s, e in runs if k)


def test_framer_next_matches_full_template(tiny_tokenizer):
    tok = tiny_tokenizer
    f = ChatFramer(tok, system_prompt="sys")
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    full = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    prefix = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True) + "b" + tok.eos_token
    assert tok(prefix, add_special_tokens=False)["input_ids"] + f.next("c") == tok(full, add_special_tokens=False)["input_ids"]


def test_batch_select_trims_padding(tiny_tokenizer):
    from lorarl.types import RolloutBatch

    ids = torch.tensor([[1, 2, 3, 0], [1, 2, 0, 0]])
    attn = ids != 0
    b = RolloutBatch(ids, attn, attn.clone(), torch.zeros(2, 4), torch.zeros(2), torch.arange(2))
    sub = b.select(torch.tensor([1]))
    assert sub.input_ids.tolist() == [[1, 2]] and len(sub) == 1


def test_env_history_turns_are_framed_as_chat_turns(tiny_tokenizer, tiny_lm, defaults):
    """AgentBench's conversation (instructions, "Ok.", question) arrives as info["history"]."""
    tok = tiny_tokenizer
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    env = gym.make("lorarl/DBBench-v0", prompt_format="chat", max_rounds=1)
    collector = RolloutCollector([env], tok, replace(defaults.algorithm.sampling, max_new_tokens=4), defaults.reward)
    (ep,) = collector.collect(policy, seeds=[0], group_ids=[0])
    obs, info = env.reset(seed=0)
    assert [m["role"] for m in ep.messages[:3]] == ["user", "assistant", "user"]
    assert ep.messages[1]["content"] == "Ok." and ep.messages[2]["content"] == obs
    prompt = ChatFramer(tok).first(obs, info["history"])
    assert ep.token_ids[: len(prompt)] == prompt and not any(ep.action_mask[: len(prompt)])
    rendered = tok.apply_chat_template(info["history"] + [{"role": "user", "content": obs}], tokenize=False,
                                       add_generation_prompt=True)
    assert tok.decode(prompt) == rendered


def test_env_error_episodes_are_not_trained_on():
    from lorarl.rollout import Episode

    ok, broken = Episode(group_id=3, seed=0), Episode(group_id=3, seed=1)
    for ep, outcome in ((ok, "incorrect"), (broken, "env_error")):
        ep.extend([1, 2], is_action=False)
        ep.extend([5, 6], is_action=True, logprobs=[-1.0, -2.0])
        ep.outcome = outcome
    batch = episodes_to_batch([ok, broken], pad_id=0)
    assert batch.action_mask.tolist() == [[False, False, True, True], [False, False, False, False]]
    assert batch.group_ids.tolist()[0] == 3 and batch.group_ids.tolist()[1] < 0


def _collector(tok, defaults, delays, **kwargs):
    from envs.wrappers import Delayed

    made = [Delayed(gym.make("lorarl/TargetWord-v0", words=["zzzz"], max_turns=2), d) for d in delays]
    return RolloutCollector(made, tok, replace(defaults.algorithm.sampling, max_new_tokens=3), defaults.reward, **kwargs)


@pytest.mark.serial  # compares wall-clock times
def test_env_steps_run_in_parallel_and_a_slow_env_delays_only_its_episode(tiny_tokenizer, tiny_lm, defaults):
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    timed = lambda c: (time.perf_counter(), c.collect(policy, [0, 1, 2, 3], [0, 1, 2, 3]), time.perf_counter())
    t0, _, t1 = timed(_collector(tiny_tokenizer, defaults, [0.5] * 4, step_workers=1))
    sequential = t1 - t0  # 4 envs x 2 steps x 0.5 s, one after another
    t0, _, t1 = timed(_collector(tiny_tokenizer, defaults, [0.5] * 4))
    # in parallel: 2 x 0.5 s of steps; the slack (2 s) is for decoding on a loaded machine
    assert sequential > 4.0 and t1 - t0 < sequential / 2, (sequential, t1 - t0)
    # one env takes 2 s per step: the others are not held back a whole round for it
    t0, episodes, t1 = timed(_collector(tiny_tokenizer, defaults, [2.0, 0.0, 0.0, 0.0], straggler_timeout_s=0.1))
    assert max(e.duration_s for e in episodes[1:]) < 1.0 and episodes[0].duration_s >= 4.0
    # with an episode budget, the slow episode ends task_limit_reached; the rest finish as usual
    c = _collector(tiny_tokenizer, defaults, [2.0, 0.0, 0.0, 0.0], straggler_timeout_s=0.1, episode_timeout_s=1.0)
    episodes = c.collect(policy, [0, 1, 2, 3], [0, 1, 2, 3])
    assert episodes[0].outcome == "task_limit_reached" and all(e.outcome == "incorrect" for e in episodes[1:])


def test_rollouts_are_reproducible_with_parallel_steps(tiny_tokenizer, tiny_lm, defaults):
    """By default rounds wait for every live episode: whichever env is slow, and by how much (here
    far past what a straggler timeout would wait), the same seed gives the same episodes, with the
    same sampling-time logprobs to the last bit."""
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    runs = []
    for delays in ([0.0, 0.05, 0.0, 0.02], [0.3, 0.0, 0.01, 0.0], [0.0, 0.0, 0.25, 0.3]):
        torch.manual_seed(0)
        got = _collector(tiny_tokenizer, defaults, delays).collect(policy, [5, 6, 7, 8], [0, 1, 2, 3])
        runs.append([(e.token_ids, e.logprobs) for e in got])
    assert runs[0] == runs[1] == runs[2]


class _Broken(gym.Wrapper):
    """Its step raises, as an env whose worker died would."""

    def step(self, action):
        raise RuntimeError("worker died")


class _Exclusive(gym.Wrapper):
    """Counts calls that began while another call on this env was still running."""

    def __init__(self, env):
        super().__init__(env)
        self.running, self.overlaps, self.resets = False, 0, 0

    def _call(self, fn, *args, **kwargs):
        self.overlaps += self.running
        self.running = True
        try:
            return fn(*args, **kwargs)
        finally:
            self.running = False

    def reset(self, **kwargs):
        self.resets += 1
        return self._call(self.env.reset, **kwargs)

    def step(self, action):
        return self._call(self.env.step, action)


def test_an_env_step_that_outlives_the_budget_ends_its_episode_and_the_batch_goes_on(tiny_tokenizer, tiny_lm, defaults):
    """The step is still running when the episode's env time runs out: the episode ends
    task_limit_reached, the batch finishes, and the env is waited for before it is reused."""
    from lorarl.evaluation import EvalSpec, evaluate_policy

    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    c = _collector(tiny_tokenizer, defaults, [1.5, 0.0, 0.0, 0.0], episode_timeout_s=0.5)
    c.envs = [_Exclusive(e) for e in c.envs]
    episodes = c.collect(policy, [0, 1, 2, 3], [0, 1, 2, 3])
    assert episodes[0].outcome == "task_limit_reached" and all(e.outcome == "incorrect" for e in episodes[1:])
    # the evaluation path: 12 tasks on 4 envs, an env that ends an episode taking the next one
    handed = []  # what evaluate.py's progress file gets, as episodes end
    episodes, _ = evaluate_policy(policy, c, EvalSpec(12, seed=10), on_batch=handed.extend)
    assert sorted(id(e) for e in handed) == sorted(id(e) for e in episodes)  # each once
    outcomes = [e.outcome for e in episodes]
    assert len(episodes) == 12 and [e.group_id for e in episodes] == list(range(12))
    assert set(outcomes) == {"task_limit_reached", "incorrect"}
    # only the slow env's episodes run out of time, and it never started one while its abandoned step ran
    assert outcomes.count("task_limit_reached") == c.envs[0].resets - 1
    assert all(e.overlaps == 0 for e in c.envs) and sum(e.resets for e in c.envs) == 4 + 12


class _TurnsBySeed(gym.Wrapper):
    """Ends an episode after 1 + seed % 3 turns, whichever env plays it."""

    def reset(self, *, seed=None, options=None):
        self.left = 1 + seed % 3
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.left -= 1
        return obs, reward, terminated, truncated or self.left == 0, info


def test_more_episodes_than_envs_keep_every_round_full(tiny_tokenizer, tiny_lm, defaults):
    """Continuous batching: an env whose episode ended starts the next one before the next
    generation, so while episodes remain every round generates for every env; the episodes
    are the ones a batch-by-batch run plays (greedy: token for token)."""
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    sizes, generate = [], policy.generate

    def counted(ids, *args, **kwargs):
        sizes.append(ids.shape[0])
        return generate(ids, *args, **kwargs)

    greedy = replace(defaults.algorithm.sampling, max_new_tokens=3, greedy=True)
    make = lambda n: [_TurnsBySeed(gym.make("lorarl/TargetWord-v0", words=["zzzz"], max_turns=9)) for _ in range(n)]  # noqa: E731
    policy.generate = counted
    episodes = RolloutCollector(make(3), tiny_tokenizer, greedy, defaults.reward).collect(policy, list(range(10)), list(range(10)))
    policy.generate = generate
    assert [e.seed for e in episodes] == list(range(10)) and all(e.done for e in episodes)
    assert [e.turns for e in episodes] == [1 + i % 3 for i in range(10)]
    assert sum(sizes) == sum(e.turns for e in episodes)  # every turn generated once
    full = len(sizes) - sizes[::-1].index(3)  # rounds up to the last full one
    assert all(s == 3 for s in sizes[:full]) and full >= 5, sizes
    batch_by_batch = sum(max(e.turns for e in episodes[i:i + 3]) for i in range(0, 10, 3))
    assert len(sizes) < batch_by_batch, (sizes, batch_by_batch)
    for i in range(0, 10, 3):  # batch by batch, on fresh envs: the same episodes
        seeds = list(range(i, min(i + 3, 10)))
        alone = RolloutCollector(make(3), tiny_tokenizer, greedy, defaults.reward).collect(policy, seeds, seeds)
        assert [(e.token_ids, e.outcome) for e in alone] == [(e.token_ids, e.outcome) for e in episodes[i:i + 3]]


def test_a_slow_policy_does_not_run_out_of_the_env_time_budget(tiny_tokenizer, tiny_lm, defaults):
    """The budget counts the env's own time: a policy slower than the whole budget, on a busy
    machine or a big model, gets the same outcomes as a fast one."""
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    fast = _collector(tiny_tokenizer, defaults, [0.0] * 2, episode_timeout_s=0.3)
    torch.manual_seed(0)
    expected = [(e.outcome, e.token_ids) for e in fast.collect(policy, [4, 5], [0, 1])]
    generate = policy.generate

    def slow(*args, **kwargs):
        time.sleep(0.4)  # longer than the episode's budget, every turn
        return generate(*args, **kwargs)

    policy.generate = slow
    torch.manual_seed(0)
    got = _collector(tiny_tokenizer, defaults, [0.0] * 2, episode_timeout_s=0.3).collect(policy, [4, 5], [0, 1])
    assert [(e.outcome, e.token_ids) for e in got] == expected and expected[0][0] == "incorrect"


def test_an_env_that_raises_ends_only_its_episode_as_env_error(tiny_tokenizer, tiny_lm, defaults):
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False).eval()
    envs_ = [_Broken(gym.make("lorarl/TargetWord-v0", words=["zzzz"])), gym.make("lorarl/TargetWord-v0", words=["zzzz"])]
    c = RolloutCollector(envs_, tiny_tokenizer, replace(defaults.algorithm.sampling, max_new_tokens=3), defaults.reward)
    broken, fine = c.collect(policy, [0, 1], [0, 1])
    assert broken.outcome == "env_error" and fine.outcome == "incorrect"
