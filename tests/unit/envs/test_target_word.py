import gymnasium as gym
import pytest

import envs  # noqa: F401
from envs.target_word import similarity


def test_similarity_is_graded_and_exact_only_for_match():
    assert similarity("yes", "yes") == 1.0
    assert similarity("yet", "yes") == pytest.approx((1 + 1 + (1 - 1 / 26)) / 3)
    assert similarity("", "yes") == 0.0
    assert similarity("yes!!!", "yes") == pytest.approx(0.5)


def test_two_turns_then_incorrect():
    env = gym.make("lorarl/TargetWord-v0", words=["go"], max_turns=2)
    env.reset(seed=0)
    assert env.step("no")[2:4] == (False, False)
    obs, r, term, trunc, info = env.step("gx")
    assert trunc and not term and info["outcome"] == "incorrect" and r == pytest.approx(0.5 + 0.5 * (1 - 9 / 26))


def test_rejects_non_string_words():
    with pytest.raises(ValueError, match="non-empty strings"):
        gym.make("lorarl/TargetWord-v0", words=[True, False])
