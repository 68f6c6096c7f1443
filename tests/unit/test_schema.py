"""Invalid config gives one line naming the key; valid overrides compose."""

import pytest

from conftest import compose, run_train
from lorarl.schema import ConfigError


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.lora.rank=-1", "model.lora.rank"),
        ("model.lora.dropout=1.5", "model.lora.dropout"),
        ("algorithm.advantage=foo", "algorithm.advantage"),
        ("algorithm.kl_estimator=k9", "algorithm.kl_estimator"),
        ("strategy.name=horovod", "strategy.name"),
        ("model.lora.rank=abc", "model.lora.rank"),
        ("algorithm=grpo algorithm.group_size=1", "algorithm.group_size"),
        ("env.envs_per_rank=6 algorithm=grpo", "env.envs_per_rank"),
    ],
)
def test_invalid_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        compose(override.split())


def test_valid_overrides_compose():
    c = compose(["strategy=fsdp", "model.lora.rank=32", "algorithm=grpo", "precision=bf16-true", "env.kwargs.max_rounds=3"])
    assert c.strategy.name == "fsdp" and c.model.lora.rank == 32 and c.algorithm.advantage == "grpo"
    assert c.precision.name == "bf16-true" and c.env.kwargs["max_rounds"] == 3


@pytest.mark.parametrize(
    "args,needle",
    [
        (["model.lora.rank=-1"], "config error: model.lora.rank=-1 is invalid"),
        (["strategy=deepspeed_stage_2"], "strategy.name=deepspeed_stage_2: DeepSpeed needs CUDA"),
        (["env.id=lorarl/Nope-v0"], "env.id='lorarl/Nope-v0'"),
        (["model.lora.rnak=3"], "model.lora.rnak"),
        (["strategy=horovod"], "strategy"),
    ],
)
def test_cli_errors_are_short_and_name_the_key(args, needle, tmp_path):
    proc = run_train(args + [f"hydra.run.dir={tmp_path}"])
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
