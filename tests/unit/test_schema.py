"""Invalid config and bad task files give one line naming the key, before training; valid
overrides compose; every default has one home (the YAML)."""

import importlib.util
import json
import subprocess
import sys
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path

import pytest
import torch

import envs  # noqa: F401
from conftest import ROOT, compose, run_all
from lorarl.schema import ConfigError, TrainConfig

BAD_TASKS = {
    "db_missing.jsonl": json.dumps({"description": "d", "label": [], "type": ["other"]}) + "\n",
    "db_not_json.jsonl": "{not json\n",
    "db_lifelong_missing.json": json.dumps([{"instruction": "q", "table_info": {"name": "t"}, "answer_info": {"direct": [[1]]}}]),
    "os_missing.json": json.dumps([{"description": "no evaluation"}]),
    "os_lifelong_missing.json": json.dumps({"0": {"instruction": "q", "initialization_command_item": {"script": "true"}}}),
    "os_bad_script.json": json.dumps([{"description": "d", "evaluation": {"check": [{"file": "check/absent.py"}]}}]),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    for name, text in BAD_TASKS.items():
        (d / name).write_text(text)
    unknown = d / "unknown_model"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    return d


OS = "env=os_interaction env.kwargs.unsafe=true"  # unsafe: the task file is read before any sandbox
CASES = [  # (overrides, the key the one-line message must name)
    ("model.lora.rank=-1", "model.lora.rank"),
    ("model.lora.rank=abc", "model.lora.rank"),
    ("model.lora.rank=100000", "model.lora.rank"),  # wider than any layer: refused before PEFT allocates
    ("model.lora.dropout=1.5", "model.lora.dropout"),
    ("model.lora.alpha=0", "model.lora.alpha"),
    ("model.lora.init=foo", "model.lora.init"),
    ("model.lora.target_modules=[]", "model.lora.target_modules"),
    ("model.lora.target_modules=[nope_proj]", "model.lora.target_modules"),
    ("model.lora.rnak=3", "model.lora.rnak"),
    ("model.tiny.num_heads=3", "model.tiny.num_heads"),
    ("model.tiny.hidden_size=0", "model.tiny.hidden_size"),
    ("model.tiny.num_kv_heads=3", "model.tiny.num_kv_heads"),
    ("model.path=/nonexistent/model", "model.path"),
    ("model.path={bad}/unknown_model", "model.path"),
    ("algorithm.advantage=foo", "algorithm.advantage"),
    ("algorithm.kl_estimator=k9", "algorithm.kl_estimator"),
    ("algorithm=grpo algorithm.group_size=1", "algorithm.group_size"),
    ("algorithm.skip_uniform_groups=true", "algorithm.skip_uniform_groups"),  # PPO's critic: no zero advantages
    ("algorithm.envs_per_rank=6 algorithm=grpo", "algorithm.envs_per_rank"),
    ("algorithm.envs_per_rank=0", "algorithm.envs_per_rank"),
    ("algorithm.clip_eps=1.5", "algorithm.clip_eps"),
    ("algorithm.dual_clip=0.5", "algorithm.dual_clip"),
    ("algorithm.gamma=2", "algorithm.gamma"),
    ("algorithm.ppo_epochs=0", "algorithm.ppo_epochs"),
    ("algorithm.minibatch_size=0", "algorithm.minibatch_size"),
    ("algorithm.optim.lr=-1", "algorithm.optim.lr"),
    ("algorithm.optim.max_grad_norm=0", "algorithm.optim.max_grad_norm"),
    ("algorithm.sampling.max_new_tokens=0", "algorithm.sampling.max_new_tokens"),
    ("algorithm.sampling.temperature=0", "algorithm.sampling.temperature"),
    ("algorithm.sampling.max_context_tokens=10", "algorithm.sampling.max_context_tokens"),
    ("algorithm.sampling.max_context_tokens=100000", "algorithm.sampling.max_context_tokens"),
    ("algorithm.sampling.cache=paged", "algorithm.sampling.cache"),
    ("algorithm.sampling.compile=true", "algorithm.sampling.compile"),
    ("algorithm.sampling.greedy=2", "algorithm.sampling.greedy"),  # OmegaConf alone reads 2 as true
    ("algorithm.sampling.lean_steps=0", "algorithm.sampling.lean_steps"),
    ("algorithm.sampling.merge_adapter=1", "algorithm.sampling.merge_adapter"),  # Optional[bool]
    ("strategy=fsdp algorithm.sampling.merge_adapter=true", "algorithm.sampling.merge_adapter"),
    ("strategy.name=horovod", "strategy.name"),
    ("precision.name=fp8", "precision.name"),
    ("precision.logprob_tolerance=0", "precision.logprob_tolerance"),
    ("trainer.iterations=0", "trainer.iterations"),
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.devices=-2", "trainer.devices"),
    ("trainer.accelerator=tpu", "trainer.accelerator"),
    ("trainer.keep_last=-1", "trainer.keep_last"),
    ("trainer.keep_last=0", "trainer.keep_last"),
    ("trainer.eval_every=-1", "trainer.eval_every"),
    ("trainer.checkpoint_every=-1", "trainer.checkpoint_every"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("env.episode_timeout_s=0", "env.episode_timeout_s"),
    ("env.step_workers=-1", "env.step_workers"),
    ("env.envs_per_rank=8", "env.envs_per_rank"),  # moved to algorithm.envs_per_rank
    ("env.id=lorarl/Nope-v0", "env.id"),
    ("env.kwargs.source=bogus", "source"),
    ("env.kwargs.max_rounds=0", "max_rounds"),
    ("env.kwargs.query_timeout_s=-1", "query_timeout_s"),
    ("env.kwargs.limits.db_mb=0", "limits.db_mb"),
    (f"{OS} env.kwargs.limits.memory_mb=-1", "limits.memory_mb"),
    (f"{OS} env.kwargs.command_timeout_s=0", "command_timeout_s"),
    (f"{OS} env.kwargs.judge_timeout_s=0", "judge_timeout_s"),
    ("reward.correct=abc", "reward.correct"),
    ("stage=foo", "stage"),
    ("stage=sft", "sft.data"),
    ("sft.holdout=1", "sft.holdout"),
    ("sft.replay_coef=0.5", "sft.replay_coef"),  # RL with replay needs the transcripts
    ("sft.replay_coef=-1", "sft.replay_coef"),
    ("sft.replay_batch=0", "sft.replay_batch"),
    ("sft.replay_coef=1 sft.data={bad}/absent.jsonl", "sft.data"),  # refused before the model loads
    ("env.kwargs.source=agentbench env.kwargs.path={bad}/db_missing.jsonl", "missing field 'table.table_info'"),
    ("env.kwargs.source=agentbench env.kwargs.path={bad}/db_not_json.jsonl", "not JSON"),
    ("env.kwargs.source=lifelong env.kwargs.path={bad}/db_lifelong_missing.json", "missing field"),
    ("env.kwargs.source=agentbench env.kwargs.path={bad}/absent.jsonl", "No such file"),
    (f"{OS} env.kwargs.source=agentbench env.kwargs.path={{bad}}/os_missing.json", "'evaluation'"),
    (f"{OS} env.kwargs.source=lifelong env.kwargs.path={{bad}}/os_lifelong_missing.json", "missing field"),
    (f"{OS} env.kwargs.source=agentbench env.kwargs.path={{bad}}/os_bad_script.json", "check/absent.py"),
    ("trainer.seed=-1", "trainer.seed"),
    ("trainer.threads=0", "trainer.threads"),
    ("env.straggler_timeout_s=-1", "env.straggler_timeout_s"),
    ("trainer.save_every=3", "trainer.checkpoint_every"),  # other trainers' words lead to lorarl's keys
    ("algorithm.learning_rate=0.1", "algorithm.optim.lr"),
    ("env.kwargs.path={bad}/db_not_json.jsonl", "set source=agentbench or source=lifelong"),  # not silently ignored
    ("resume={bad}/no_such_checkpoint", "no such checkpoint directory"),
    ("model=qwen2.5-0.5b-random model.lora.rank=100000", "use at most 128"),  # refused on the skeleton, before weights
]
if not torch.cuda.is_available():
    CASES.append(("trainer.accelerator=gpu", "trainer.accelerator"))


def config_error(overrides: list[str], run_dir: Path) -> str:
    """The one-line error a user gets, as train.py makes it: from composing and validating
    (``check_overrides``), or from building the run."""
    from lorarl.factory import build_run
    from lorarl.schema import check_overrides, load

    def build(cfg, _):
        trainer, module, _ = build_run(load(cfg), run_dir)
        module.collector.close()

    try:
        check_overrides(str(ROOT / "conf"), "config", overrides, build)
    except ConfigError as e:
        return str(e)
    raise AssertionError(f"{overrides} was accepted")


@pytest.mark.parametrize("override,key", CASES, ids=[c[0] for c in CASES])
def test_bad_override_or_task_file_is_one_line_naming_the_key(override, key, bad_files, tmp_path):
    message = config_error(override.format(bad=bad_files).split(), tmp_path)
    assert key in message and "\n" not in message, message


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


def test_valid_overrides_compose():
    c = compose(["strategy=fsdp", "model.lora.rank=32", "algorithm=grpo", "precision=bf16-true", "env.kwargs.max_rounds=3"])
    assert c.strategy.name == "fsdp" and c.model.lora.rank == 32 and c.algorithm.advantage == "grpo"
    assert c.precision.name == "bf16-true" and c.env.kwargs["max_rounds"] == 3
    assert c.algorithm.kl_coef == 0.01 and c.algorithm.group_size == 4  # grpo.yaml's differences...
    assert c.algorithm.clip_eps == compose([]).algorithm.clip_eps  # ...over ppo.yaml's keys


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf/experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_into_a_valid_recipe(preset):
    c = compose([f"experiment={preset}"])
    assert c.stage == "warmstart" and c.run_name == preset and c.sft.oracle_episodes > 0
    # held-out success is measured at the end of RL too, on enough tasks to see a change of ~0.15
    assert c.trainer.eval_samples >= 48 and c.trainer.eval_every > 0
    assert c.trainer.iterations % c.trainer.eval_every == 0


def test_every_default_has_one_home_the_yaml():
    """The schema's dataclasses declare types only: a default there would be a second copy."""
    import typing

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            assert f.default is MISSING and f.default_factory is MISSING, f"{prefix}{f.name} has a default in the schema"
            sub = hints[f.name]
            sub = next((a for a in getattr(sub, "__args__", ()) if is_dataclass(a)), sub)
            if is_dataclass(sub):
                walk(sub, f"{prefix}{f.name}.")

    walk(TrainConfig)


def test_schema_imports_no_deep_learning_stack():
    """A bad value is reported before torch, transformers or Lightning load (about 0.3 s, not 4)."""
    code = ("import sys, lorarl.schema; heavy = {'lightning', 'torch', 'transformers', 'peft'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


CLI_ERRORS = [
    (["model.lora.rank=-1"], "config error: model.lora.rank=-1 is invalid"),
    (["strategy=deepspeed_stage_3"], "strategy.name=deepspeed_stage_3: DeepSpeed " + (
        "needs CUDA" if importlib.util.find_spec("deepspeed") else "is not installed; install it with "
        "`bash scripts/install.sh --deepspeed`")),
    (["model.lora.rnak=3"], "model.lora.rnak: no such key"),
    (["model.lora.target_modules=[nope_proj]"], "matches no module of this model"),
    (["model=qwen2.5-0.5b-random", "model.lora.rank=100000"], "model.lora.rank=100000 is invalid"),
    (["model.path=/nonexistent/model"], "config error: model.path='/nonexistent/model': no such directory"),
    (["precision=16"], "config error: precision=16: no such option; available: 32-true, bf16-mixed, bf16-true"),
]


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path):
    runs = [tmp_path / f"run{i}" for i in range(len(CLI_ERRORS))]
    procs = run_all([[str(ROOT / "train.py"), *args, f"hydra.run.dir={run}"] for (args, _), run in zip(CLI_ERRORS, runs)])
    for (args, needle), run, proc in zip(CLI_ERRORS, runs, procs):
        assert proc.returncode != 0, args
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert lines and needle in lines[-1] and lines[-1].startswith("config error:"), (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, args
        assert not run.exists(), args  # a run that never started leaves no directory


def test_one_generator_skill_may_be_named_alone():
    import gymnasium as gym

    for env_id in ("lorarl/DBBench-v0",):
        env = gym.make(env_id, skills="count")
        assert env.unwrapped.skills == ("count",) and env.reset(seed=0)[1]["task_type"] == "count"
        env.close()


def test_evaluation_takes_the_runs_env_even_from_an_older_run(tmp_path):
    """A run made before env.envs_per_rank moved and before the newer env keys existed."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lorarl.schema import EvalConfig, load, validate_eval, with_run_config

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints/iter_000001").mkdir(parents=True)
    (run / "checkpoints/iter_000001/adapter_config.json").write_text("{}")
    OmegaConf.save({"env": {"id": "lorarl/TargetWord-v0", "kwargs": {"max_turns": 3}, "system_prompt": None,
                            "envs_per_rank": 16},
                    "reward": {"correct": 2.0}, "algorithm": {"sampling": {"max_new_tokens": 7}}}, run / ".hydra/config.yaml")
    adapter = str(run / "checkpoints/iter_000001")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("evaluate", overrides=[f"adapter={adapter}"])
    config = load(with_run_config(cfg, str(run / ".hydra/config.yaml"), {"adapter"}), EvalConfig, validate_eval)
    assert config.env.id == "lorarl/TargetWord-v0" and config.env.kwargs == {"max_turns": 3}
    assert config.env.episode_timeout_s > 0  # a key the old run lacks keeps evaluate's default
    assert config.reward.correct == 2.0 and config.reward.incorrect == compose([]).reward.incorrect
    assert config.algorithm.sampling.max_new_tokens == 7
    user = load(with_run_config(cfg, str(run / ".hydra/config.yaml"), {"adapter", "algorithm.sampling.max_new_tokens"}),
                EvalConfig, validate_eval)
    assert user.algorithm.sampling.max_new_tokens == 64  # what the user set on the command line wins


def test_no_reward_preset_pays_an_agent_more_for_stalling_or_garbage_than_for_a_wrong_answer():
    """Reaching the round limit, filling the context or an unparsable reply are the agent's own
    failures: a preset that paid them more than a wrong answer would teach RL to stall rather
    than answer (a policy drifted to 31% task_limit_reached in 4 iterations when the limit paid -0.3
    against -0.5)."""
    from conftest import CONF

    for preset in sorted(p.stem for p in (CONF / "reward").glob("*.yaml")):
        r = compose([f"reward={preset}"]).reward
        assert r.task_limit_reached <= r.incorrect and r.invalid_action <= r.incorrect, preset
