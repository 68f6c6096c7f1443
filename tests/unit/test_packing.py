"""lorarl.packing and the packed training forward: micro-batches within the token budget, a shared
prefix laid out once, and logprobs, values, losses and gradients equal to one plain padded forward
(Qwen2 and Llama, LoRA and full fine-tuning), whatever the split."""

from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from lorarl import packing, ppo
from lorarl.lora import apply_lora
from lorarl.packing import CostModel
from lorarl.policy import Policy
from lorarl.types import RolloutBatch

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.2, tie_word_embeddings=False)
SHARE = CostModel(1.0, 0.0)  # tokens cost, pairs do not: every shared prefix is laid out once
PLAIN = CostModel(0.0, 1.0)  # pairs cost: no tree row is ever cheaper


def _episodes(seed=0):
    """Two GRPO groups of 3 whose prompts start with the same instructions, replies of various lengths."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(3, 300, (n,), generator=g).tolist()  # noqa: E731
    instructions = rand(20)
    episodes = []
    for _ in range(2):
        prompt = instructions + rand(6)
        episodes += [prompt + rand(int(n)) for n in torch.randint(3, 15, (3,), generator=g)]
    episodes.append(rand(9))  # shares nothing
    return episodes


def _batch(episodes, seed=0) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    B, T = len(episodes), max(map(len, episodes))
    ids = torch.zeros(B, T, dtype=torch.long)
    attn = torch.zeros(B, T, dtype=torch.bool)
    act = torch.zeros(B, T, dtype=torch.bool)
    for i, e in enumerate(episodes):
        ids[i, :len(e)] = torch.tensor(e)
        attn[i, :len(e)] = True
        act[i, 26:len(e)] = True  # the reply (after the group prompt); the last episode: tokens 26+
        act[i, 0] = False
    act[-1, 3:9] = True
    return RolloutBatch(ids, attn, act, torch.zeros(B, T), torch.randn(B, generator=g),
                        torch.tensor([0, 0, 0, 1, 1, 1, 2]))


def _policy(arch, lora: bool, critic: bool = True):
    cls, cfg = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "llama": (LlamaForCausalLM, LlamaConfig)}[arch]
    torch.manual_seed(0)
    lm = cls(cfg(**SMALL))
    if lora:
        from lorarl.specs import LoraSpec

        lm = apply_lora(lm, LoraSpec(True, 4, 8.0, 0.0, "all-linear", [], "default", None))
        with torch.no_grad():
            for n, p in lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    policy = Policy(lm, with_value_head=critic, keep_reference=not lora).eval()
    if critic:
        with torch.no_grad():
            policy.value_head.weight.normal_(0, 0.1)
    return policy


def test_a_shared_prefix_is_laid_out_once_and_each_token_sees_its_own_ancestors():
    eps = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [1, 2, 7], [8, 8]]
    units = packing.plan(eps, 100, SHARE)
    tree = [u for batch in units for u in batch if u.tree]
    assert len(tree) == 1 and tree[0].width == 5 + 1 + 1  # 1 2 3 4 5, then 9, then 7
    mb = packing.build(tree[0:1], eps, 0, "cpu")
    order = [eps[m] for m in mb.episodes.tolist()]
    for e, seq in enumerate(order):  # every token where the index says, at its own position
        flat = mb.index[e, :len(seq)]
        assert mb.input_ids.flatten()[flat].tolist() == seq
        assert mb.position_ids.flatten()[flat].tolist() == list(range(len(seq)))
        sees = mb.attention_mask[0, 0][flat[-1]]
        assert sees.nonzero().flatten().tolist() == sorted(flat.tolist())  # its path, nothing else


def test_micro_batches_stay_within_the_budget_and_cover_every_episode_once():
    eps = _episodes()
    for budget, cost in [(40, SHARE), (60, PLAIN), (200, SHARE), (41, PLAIN)]:
        batch = _batch(eps)
        mbs = packing.micro_batches(batch.input_ids, batch.attention_mask, budget, cost, 0)
        assert sorted(i for mb in mbs for i in mb.episodes.tolist()) == list(range(len(eps)))
        assert all(mb.tokens <= budget for mb in mbs)
    shared = packing.micro_batches(batch.input_ids, batch.attention_mask, 1000, SHARE, 0)
    assert sum(int((mb.input_ids != 0).sum()) for mb in shared) < sum(map(len, eps)) - 2 * 20  # the instructions once


def test_the_cost_model_shares_where_the_prefix_is_long_next_to_the_replies():
    eps = [list(range(3, 403)) + [i, i + 1] for i in range(4)]  # 400 shared tokens, 2 of their own
    small = CostModel.of(Qwen2ForCausalLM(Qwen2Config(**SMALL)))
    assert all(u.tree for batch in packing.plan(eps, 4096, small) for u in batch)
    long_replies = [list(range(3, 13)) + list(range(20 + 1000 * i, 1020 + 1000 * i)) for i in range(4)]
    assert not any(u.tree for batch in packing.plan(long_replies, 8192, small) for u in batch)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("lora", [True, False])
@pytest.mark.parametrize("cost, budget", [(SHARE, 64), (SHARE, 1000), (PLAIN, 41)])
def test_packed_forwards_give_the_plain_forwards_logprobs_values_and_reference(arch, lora, cost, budget):
    policy, batch = _policy(arch, lora), _batch(_episodes())
    act = batch.action_mask
    with torch.no_grad():
        plain = policy(batch.input_ids, batch.attention_mask, 0.7, True, positions=act)
        plain_ref = policy.reference_logprobs(batch.input_ids, batch.attention_mask, 0.7, positions=act)
        b = ppo.Batching(budget, cost, 0)
        logp, values, ref = ppo._forwards(policy, batch, b, 0.7, True, True, True)
    assert torch.allclose(logp, plain.logprobs, atol=2e-5) and torch.allclose(values, plain.values, atol=2e-5)
    assert torch.allclose(ref, plain_ref, atol=2e-5)
    assert (logp[act] != 0).all() and not logp[~act].any()


def _grads(policy, batch, targets, spec, batching, backward=lambda loss, last: loss.backward()):
    policy.zero_grad(set_to_none=True)
    stats = ppo.minibatch_update(policy, batch, targets, spec, 0.7, batching, backward)
    return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}, stats


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("lora", [True, False])
def test_the_update_gradient_is_the_one_big_batch_gradient_whatever_the_split(arch, lora, defaults):
    policy, batch = _policy(arch, lora), _batch(_episodes())
    spec = replace(ppo.PPOSpec.of(defaults.algorithm), entropy_coef=0.01, kl_coef=0.05)
    with torch.no_grad():
        plain = policy(batch.input_ids, batch.attention_mask, 0.7, True, positions=batch.action_mask)
    batch.old_logprobs = plain.logprobs + 0.01 * torch.randn_like(plain.logprobs) * batch.action_mask
    targets, _ = ppo.prepare(policy, batch, spec, ppo.AdvantageState(), 0.7, ppo.Batching(10_000, PLAIN, 0))
    policy.train()
    one, one_stats = _grads(policy, batch, targets, spec, ppo.Batching(10_000, PLAIN, 0, share_prefixes=False))
    assert len(one) > 4
    for budget, cost in [(45, SHARE), (40, PLAIN), (500, SHARE)]:
        split, stats = _grads(policy, batch, targets, spec, ppo.Batching(budget, cost, 0))
        for name, g in one.items():
            assert torch.allclose(split[name], g, atol=1e-5, rtol=1e-4), (budget, name)
        for key in ("train/loss", "train/clip_frac", "train/entropy", "train/value_loss"):
            assert stats[key] == pytest.approx(one_stats[key], rel=1e-4, abs=1e-6)


def test_a_rank_with_fewer_micro_batches_runs_no_op_ones_that_change_nothing(defaults):
    policy, batch = _policy("qwen2", True, critic=False), _batch(_episodes())
    spec = ppo.PPOSpec.of(replace(defaults.algorithm, advantage="grpo"))
    targets, _ = ppo.prepare(policy, batch, spec, ppo.AdvantageState(), 1.0, ppo.Batching(10_000, PLAIN, 0))
    alone, _ = _grads(policy, batch, targets, spec, ppo.Batching(10_000, PLAIN, 0))
    calls = []
    padded = ppo.Batching(10_000, PLAIN, 0, max_over_ranks=lambda n: n + 2)
    got, _ = _grads(policy, batch, targets, spec, padded, lambda loss, last: (calls.append(last), loss.backward()))
    assert calls == [False, False, True]  # the real micro-batch, then two no-ops; the last is marked
    assert got.keys() == alone.keys() and all(torch.equal(got[n], g) for n, g in alone.items())

