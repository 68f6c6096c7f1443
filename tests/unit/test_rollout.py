"""Token-in/token-out rollouts: masks, framing and logprobs on a real two-turn episode."""

import gymnasium as gym
import torch

import envs  # noqa: F401
from lorarl.lora import LoraSpec, apply_lora
from lorarl.policy import Policy
from lorarl.rewards import RewardTable
from lorarl.rollout import ChatFramer, RolloutCollector, SamplingSpec, episodes_to_batch


def _runs(mask):
    """[(is_action, start, end)] of consecutive equal mask values."""
    out, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append((mask[start], start, i))
            start = i
    return out


def test_two_turn_episode_masks_and_framing(tiny_tokenizer, tiny_lm):
    torch.manual_seed(0)
    tok = tiny_tokenizer
    policy = Policy(apply_lora(tiny_lm, LoraSpec()), with_value_head=False, keep_reference=False).eval()
    env = gym.make("lorarl/TargetWord-v0", words=["zzzz"], max_turns=2)  # a random model never says zzzz
    collector = RolloutCollector([env], tok, SamplingSpec(max_new_tokens=5), RewardTable())
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


def test_env_history_turns_are_framed_as_chat_turns(tiny_tokenizer, tiny_lm):
    """AgentBench's conversation (instructions, "Ok.", question) arrives as info["history"]."""
    tok = tiny_tokenizer
    policy = Policy(apply_lora(tiny_lm, LoraSpec()), with_value_head=False, keep_reference=False).eval()
    env = gym.make("lorarl/DBBench-v0", prompt_format="chat", max_rounds=1)
    collector = RolloutCollector([env], tok, SamplingSpec(max_new_tokens=4), RewardTable())
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
