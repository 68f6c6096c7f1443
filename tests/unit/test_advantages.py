import pytest
import torch

from lorarl import advantages as A
from lorarl.ops import masked_whiten, token_entropy, token_logprobs


def test_terminal_rewards_on_last_action_token():
    mask = torch.tensor([[False, True, True, False, True, False], [False, False, False, False, False, False]])
    r = A.terminal_rewards(torch.tensor([2.0, 5.0]), mask)
    assert r.tolist() == [[0, 0, 0, 0, 2.0, 0], [0] * 6]


def test_gae_skips_observation_tokens():
    # actions at t=1,2 (turn 1) and t=4 (turn 2); t=3 is env text. reward 1 at t=4.
    mask = torch.tensor([[False, True, True, False, True]])
    values = torch.tensor([[9.0, 0.5, 0.25, 9.0, 0.5]])  # values at non-action tokens must not matter
    rewards = A.terminal_rewards(torch.tensor([1.0]), mask)
    adv, ret = A.gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=4: delta = 1 + 0 - 0.5 = 0.5, A = 0.5
    # t=2: delta = 0 + 0.5 - 0.25 = 0.25, A = 0.25 + 0.5*0.5 = 0.5
    # t=1: delta = 0 + 0.25 - 0.5 = -0.25, A = -0.25 + 0.5*0.5 = 0
    assert adv[0].tolist() == pytest.approx([0, 0.0, 0.5, 0, 0.5])
    assert ret[0].tolist() == pytest.approx([0, 0.5, 0.75, 0, 1.0])


def test_gae_with_discount():
    mask = torch.tensor([[True, True]])
    adv, _ = A.gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), mask, gamma=0.5, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.5, 1.0])


def test_group_relative():
    r = torch.tensor([1.0, 0.0, 3.0, 3.0, 5.0])
    g = torch.tensor([0, 0, 1, 1, 2])
    adv = A.group_relative(r, g)
    # group 0: mean 0.5, unbiased std sqrt(0.5); group 1: all equal -> 0; group 2: single -> 0
    s = 0.5**0.5
    assert adv.tolist() == pytest.approx([0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0, 0, 0], abs=1e-5)
    assert A.group_relative(r, g, scale_by_std=False).tolist() == pytest.approx([0.5, -0.5, 0, 0, 0])


def test_informative_groups_are_those_whose_rewards_differ():
    r = torch.tensor([1.0, 0.0, 3.0, 3.0, 5.0, -0.5, -0.5, -0.4])
    g = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3])
    assert A.informative(r, g).tolist() == [True, True, False, False, False, True, True, True]
    # exactly the episodes whose GRPO advantage is not 0
    assert A.informative(r, g).tolist() == (A.group_relative(r, g) != 0).tolist()


def test_informative_rows_top_up_to_what_the_other_ranks_train_on():
    from lorarl.ppo import informative_rows
    from lorarl.types import RolloutBatch

    r = torch.tensor([0.0, 0.0, 1.0, 0.0, -0.5, -0.5])  # groups of 2: only group 1 (episodes 2, 3) differs
    batch = RolloutBatch(torch.ones(6, 4, dtype=torch.long), torch.ones(6, 4, dtype=torch.bool),
                         torch.ones(6, 4, dtype=torch.bool), torch.zeros(6, 4), r, torch.arange(6) // 2)
    rows, count = informative_rows(batch)
    assert rows.tolist() == [2, 3] and count == 2
    rows, count = informative_rows(batch, pad_to=lambda n: 5)  # another rank trains on 5
    assert rows.tolist() == [2, 3, 0, 1, 4] and count == 2
    assert informative_rows(batch, pad_to=lambda n: 9)[0].tolist() == [2, 3, 0, 1, 4, 5]


def test_reinforce_baseline_and_running_mean():
    r = torch.tensor([1.0, 3.0])
    assert A.reinforce_baseline(r, 0.5).tolist() == [0.5, 2.5]
    assert A.update_running_mean(1.0, r, momentum=0.75) == pytest.approx(0.75 * 1.0 + 0.25 * 2.0)


def test_broadcast_and_whiten():
    mask = torch.tensor([[False, True, True], [True, False, False]])
    b = A.broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert b.tolist() == [[0, 2.0, 2.0], [-1.0, 0, 0]]
    w = masked_whiten(b, mask)
    assert float((w * mask).sum()) == pytest.approx(0.0, abs=1e-6)
    assert w[~mask].abs().sum() == 0


def test_token_logprobs_alignment():
    # vocab 2; logits predict token at t+1 from position t
    logits = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]]))
    ids = torch.tensor([[0, 1, 0]])
    lp = token_logprobs(logits, ids)
    assert lp[0].tolist() == pytest.approx([0.0, torch.log(torch.tensor(0.75)).item(), torch.log(torch.tensor(0.5)).item()])
    ent = token_entropy(logits, 1.0)
    assert ent[0, 0] == 0 and ent[0, 2].item() == pytest.approx(0.6931, abs=1e-4)


def test_every_advantage_the_config_accepts_has_an_estimator():
    from lorarl.ppo import ESTIMATORS
    from lorarl.specs import ADVANTAGES

    assert set(ESTIMATORS) == set(ADVANTAGES) and [a for a, critic in ADVANTAGES.items() if critic] == ["gae"]
