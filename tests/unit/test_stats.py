"""Confidence intervals, pass@k and the paired tests, against hand-computed numbers."""

import pytest

from lorarl.stats import mcnemar_exact, paired_bootstrap, pass_at_k, wilson_interval


def test_wilson_interval():
    # 0/10: the upper bound is z^2 / (n + z^2) = 3.8415 / 13.8415
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    # 8/10: centre (0.8 + 0.19207) / 1.38415 = 0.71679; half 1.95996 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22666
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94331), abs=1e-5)
    # 5/10 is symmetric about 0.5
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5) and hi == pytest.approx(1 - lo)
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no episodes: no information


def test_pass_at_k():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the success rate
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(4, 2, 3) == 1.0  # n - c < k: a success is certain
    assert pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_mcnemar_exact():
    # 8 pairs only A right, 2 only B right: n = 10, P(X <= 2) = (1 + 10 + 45) / 1024, two-sided x2
    assert mcnemar_exact(8, 2) == pytest.approx(112 / 1024)
    assert mcnemar_exact(2, 8) == mcnemar_exact(8, 2)
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_paired_bootstrap_on_a_constructed_case():
    better = paired_bootstrap([1, 1, 1, 1, 0.5, 1, 1, 1], [0, 0, 0, 0.5, 0, 0, 0, 0])
    assert better["difference"] == pytest.approx((7.5 - 0.5) / 8)
    assert better["p_value"] < 0.01 and better["ci95"][0] > 0.5
    same = paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0])
    assert same["difference"] == 0 and same["p_value"] == 1.0
    noisy = paired_bootstrap([1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 1, 0])
    assert noisy["p_value"] > 0.5  # as many tasks one way as the other


def _episodes(outcomes_by_task: dict[int, list[str]]):
    from lorarl.rollout import Episode

    out = []
    for task, outcomes in outcomes_by_task.items():
        for o in outcomes:
            e = Episode(group_id=task, seed=task)
            e.outcome, e.task_type = o, "count" if task % 2 else "sum"
            out.append(e)
    return out


def test_evaluation_confidence_pass_at_k_and_paired_comparison():
    from lorarl.evaluation import confidence, paired

    c, i = "correct", "incorrect"
    adapter = _episodes({0: [c], 1: [c], 2: [c], 3: [i], 4: [c], 5: [c], 6: [c], 7: [c], 8: [c], 9: [c]})
    base = _episodes({0: [i], 1: [i], 2: [c], 3: [c], 4: [i], 5: [i], 6: [i], 7: [i], 8: [i], 9: [i]})
    test = paired(adapter, base)  # 8 tasks only the adapter solves, 1 only the base
    assert test["test"] == "mcnemar_exact" and (test["only_this_correct"], test["only_other_correct"]) == (8, 1)
    assert test["p_value"] == pytest.approx(2 * (1 + 9) / 512) and test["difference"] == pytest.approx(0.7)
    conf = confidence(adapter)
    assert conf["intervals"]["success_rate"] == pytest.approx(wilson_interval(9, 10))
    assert conf["k"] == 1 and conf["pass@1"] == pytest.approx(0.9)
    several = _episodes({0: [c, i, i], 1: [i, i, i], 2: [c, c, i]})  # k = 3
    conf = confidence(several)
    assert conf["k"] == 3 and conf["pass@1"] == pytest.approx((1 / 3 + 0 + 2 / 3) / 3)
    assert conf["pass@3"] == pytest.approx(2 / 3) and conf["intervals"]["pass@3"] == pytest.approx(wilson_interval(2, 3))
    assert paired(several, _episodes({0: [i] * 3, 1: [i] * 3, 2: [i] * 3}))["test"] == "paired_bootstrap"
