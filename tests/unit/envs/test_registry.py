import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_check_env_on_every_registered_id(env_id):
    check_env(gym.make(env_id).unwrapped)


def test_envs_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, envs, gymnasium as gym; [gym.make(i).reset(seed=0) for i in envs.ENV_IDS]; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
