"""SFT replay beside RL (``sft.replay_coef``, lorarl.sft.Replay): its loss is the mean
cross-entropy of the assistant tokens of the transcripts it draws, computed by hand here; its
gradients join each optimizer step before the minibatch's own, so the step's last backward (where
DDP all-reduces) stays the minibatch's; the draws repeat for a seed."""

from dataclasses import replace

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from lorarl import ppo
from lorarl.lora import apply_lora
from lorarl.packing import CostModel
from lorarl.policy import Policy
from lorarl.sft import Replay, Transcripts
from lorarl.specs import LoraSpec
from lorarl.types import RolloutBatch

SMALL = dict(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.2, tie_word_embeddings=False)
BATCHING = ppo.Batching(10_000, CostModel(0.0, 1.0), 0)


def _policy() -> Policy:
    torch.manual_seed(0)
    lm = apply_lora(Qwen2ForCausalLM(Qwen2Config(**SMALL)), LoraSpec(True, 4, 8.0, 0.0, "all-linear", [], "default", None))
    return Policy(lm, with_value_head=False, keep_reference=False).eval()


def _items() -> Transcripts:
    """Three transcripts of (ids, loss mask): a prompt, then assistant tokens (True), an observation
    (False) and more assistant tokens."""
    g = torch.Generator().manual_seed(1)
    out = []
    for n_prompt, reply, obs, reply2 in [(5, 3, 2, 2), (7, 4, 0, 0), (4, 2, 3, 5)]:
        ids = torch.randint(1, 120, (n_prompt + reply + obs + reply2,), generator=g).tolist()
        mask = [False] * n_prompt + [True] * reply + [False] * obs + [True] * reply2
        out.append((ids, mask))
    return Transcripts(out)


def _by_hand(policy: Policy, items) -> torch.Tensor:
    """Mean over every assistant token of every transcript of -log p(token | the tokens before it)."""
    nll = []
    for ids, mask in items:
        x = torch.tensor([ids])
        logp = torch.log_softmax(policy.lm(input_ids=x).logits[0, :-1].float(), -1)
        picked = logp.gather(-1, x[0, 1:, None])[:, 0]
        nll += [-picked[t - 1] for t in range(1, len(ids)) if mask[t]]
    return torch.stack(nll).mean()


def test_the_replay_loss_is_the_mean_cross_entropy_of_the_assistant_tokens_scaled_by_its_coefficient():
    policy, items = _policy(), _items()
    parts = []
    step = Replay(items, batch_size=3, coef=0.25, pad_id=0).sampler(seed=7, device="cpu")
    stats = step(policy, BATCHING, parts.append)
    expected = _by_hand(policy, list(items))
    assert stats["train/replay_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert float(sum(parts)) == pytest.approx(0.25 * float(expected), rel=1e-5)
    # and the gradient is the coefficient times the hand-computed loss's
    sum(parts).backward()
    got = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad(set_to_none=True)
    (0.25 * _by_hand(policy, list(items))).backward()
    assert got and all(torch.allclose(got[n], p.grad, atol=1e-6, rtol=1e-4) for n, p in policy.named_parameters()
                       if p.grad is not None)


def test_the_draws_repeat_for_a_seed_and_differ_between_seeds():
    items = Transcripts([([1, 2, 3 + i], [False, True, True]) for i in range(40)])
    replay = Replay(items, batch_size=4, coef=1.0, pad_id=0)

    def drawn(seed):
        seen = []

        class Spy:  # records the batches the sampler draws, without a model
            def packed(self, mb, wanted, ids, *a, **k):
                seen.append(ids[:, 2].tolist())
                return type("Out", (), {"logprobs": torch.zeros(wanted.shape, requires_grad=True)})()

        step = replay.sampler(seed, "cpu")
        for _ in range(3):
            step(Spy(), BATCHING, lambda loss: None)
        return seen

    assert drawn(5) == drawn(5)
    assert drawn(5) != drawn(6)
    assert all(len(set(b)) == 4 for b in drawn(5))  # a batch draws without replacement


def _batch() -> RolloutBatch:
    """One GRPO group of 4 episodes with equal rewards: every advantage is 0, so without replay (and
    without KL or entropy terms) the update's gradient is 0."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 120, (4, 12), generator=g)
    act = torch.zeros(4, 12, dtype=torch.bool)
    act[:, 6:] = True
    return RolloutBatch(ids, torch.ones(4, 12, dtype=torch.bool), act, torch.zeros(4, 12), torch.ones(4),
                        torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("with_replay", [False, True])
def test_update_adds_the_replay_gradient_before_each_step_and_keeps_the_step_last_backward(with_replay, defaults):
    policy, batch = _policy(), _batch()
    spec = replace(ppo.PPOSpec.of(defaults.algorithm), advantage="grpo", group_size=4, ppo_epochs=2, minibatch_size=2,
                   kl_coef=0.0, entropy_coef=0.0)
    targets, _ = ppo.prepare(policy, batch, spec, ppo.AdvantageState(), 1.0, BATCHING)
    assert not targets.advantages.any()
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    calls = []

    def backward(loss, last):
        calls.append(last)
        loss.backward()

    def step():
        calls.append("step")
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {}

    replay = Replay(_items(), batch_size=2, coef=1.0, pad_id=0).sampler(0, "cpu") if with_replay else None
    policy.train()
    stats, _ = ppo.update(policy, batch, targets, spec, 1.0, BATCHING, backward, step, replay=replay)
    moved = any(not torch.equal(p, before[n]) for n, p in policy.named_parameters() if p.requires_grad)
    assert moved == with_replay
    per_step = [False, True, "step"] if with_replay else [True, "step"]  # replay first, never marked last
    assert calls == per_step * 4  # 2 epochs x 2 minibatches, one optimizer step each
    assert ("train/replay_loss" in stats) == with_replay
