"""The structured schema of the training config, and its validation.

``train.py`` merges the composed Hydra config into these dataclasses (unknown keys and wrong
types are rejected by OmegaConf), then ``validate`` checks ranges and choices. Every failure is
a ``ConfigError`` whose message names the key and what is allowed, printed as one line.
Below ``train.py`` code receives these typed objects or their parts, never a DictConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorarl.models import TinyModelSpec
from lorarl.module import LoopSpec, OptimSpec, PPOSpec
from lorarl.rewards import RewardTable
from lorarl.rollout import SamplingSpec
from lorarl.strategies import STRATEGIES, StrategySpec

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
ADVANTAGES = ("gae", "grpo", "reinforce")
KL_ESTIMATORS = ("k1", "k2", "k3")
LORA_INITS = ("default", "gaussian", "pissa", "olora")


class ConfigError(ValueError):
    pass


@dataclass
class LoraConfig:
    enabled: bool = True
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: Any = "all-linear"  # "all-linear" or a list of module names
    exclude_modules: list[str] = field(default_factory=list)
    init: str = "default"
    lora_path: Optional[str] = None


@dataclass
class ModelConfig:
    path: Optional[str] = None
    trust_remote_code: bool = False
    tiny: TinyModelSpec = field(default_factory=TinyModelSpec)
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class EnvConfig:
    id: str = "lorarl/TargetWord-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)
    system_prompt: Optional[str] = None
    envs_per_rank: int = 16


@dataclass
class AlgorithmConfig(PPOSpec):
    group_size: int = 1
    optim: OptimSpec = field(default_factory=OptimSpec)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)


@dataclass
class PrecisionConfig:
    name: str = "32-true"
    logprob_tolerance: float = 1e-3


@dataclass
class TrainerConfig:
    iterations: int = 20
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    checkpoint_every: int = 10
    keep_last: Optional[int] = None
    transcripts_every: int = 5
    transcripts_count: int = 2
    eval_every: int = 0
    eval_samples: int = 16
    eval_seed: int = 1_000_000_000
    progress_bar: bool = True


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    name: str = "tb"


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardTable = field(default_factory=RewardTable)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    strategy: StrategySpec = field(default_factory=StrategySpec)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run_name: str = "default"
    resume: Optional[str] = "auto"  # "auto": latest checkpoint of this run dir; a path; or null


@dataclass
class EvalSampling:
    sampling: SamplingSpec = field(default_factory=lambda: SamplingSpec(greedy=True))


@dataclass
class EvalConfig:
    adapter: Optional[str] = None  # checkpoint dir, or "none" for the base model
    compare: list[str] = field(default_factory=list)
    model_path: Optional[str] = None
    mode: str = "evaluate"
    use_merged: bool = False
    merged_path: Optional[str] = None
    num_samples: int = 32
    seed: int = 12345
    by_task_index: bool = False
    report: Optional[str] = None
    log_dir: Optional[str] = None
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardTable = field(default_factory=RewardTable)
    algorithm: EvalSampling = field(default_factory=EvalSampling)


def validate_eval(c: EvalConfig) -> None:
    _need(c.adapter is not None, "adapter", c.adapter, "give a checkpoint directory or none")
    _choice("mode", c.mode, ("evaluate", "merge", "both"))
    _need(c.mode == "evaluate" or c.merged_path, "merged_path", c.merged_path, f"required with mode={c.mode}")
    _need(not c.use_merged or c.merged_path, "merged_path", c.merged_path, "required with use_merged=true")
    _need(c.num_samples >= 1, "num_samples", c.num_samples, "must be >= 1")
    _need(c.env.envs_per_rank >= 1, "env.envs_per_rank", c.env.envs_per_rank, "must be >= 1")


def load(cfg: DictConfig, schema=TrainConfig, check=None):
    """Composed Hydra config -> validated schema object, or ConfigError with a one-line message."""
    missing = sorted(OmegaConf.missing_keys(cfg))  # merging onto the schema would hide '???'
    if missing:
        raise ConfigError(f"{missing[0]}: a value is required (e.g. {missing[0]}=...)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        msg = str(e).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    (check or validate)(config)
    return config


def _need(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _choice(key: str, value, choices) -> None:
    _need(value in choices, key, value, "expected one of " + ", ".join(map(str, choices)))


def validate(c: TrainConfig) -> None:
    lora, alg, tr = c.model.lora, c.algorithm, c.trainer
    _need(lora.rank >= 0, "model.lora.rank", lora.rank, "must be >= 0 (0 means full fine-tuning)")
    _need(lora.alpha > 0, "model.lora.alpha", lora.alpha, "must be > 0")
    _need(0 <= lora.dropout < 1, "model.lora.dropout", lora.dropout, "must be in [0, 1)")
    _choice("model.lora.init", lora.init, LORA_INITS)
    tm = lora.target_modules
    _need(tm == "all-linear" or (isinstance(tm, list) and tm and all(isinstance(x, str) for x in tm)),
          "model.lora.target_modules", tm, "expected 'all-linear' or a non-empty list of module names")
    _choice("strategy.name", c.strategy.name, STRATEGIES)
    _choice("precision.name", c.precision.name, PRECISIONS)
    _need(c.precision.logprob_tolerance > 0, "precision.logprob_tolerance", c.precision.logprob_tolerance, "must be > 0")
    _choice("algorithm.advantage", alg.advantage, ADVANTAGES)
    _choice("algorithm.kl_estimator", alg.kl_estimator, KL_ESTIMATORS)
    for key in ("ppo_epochs", "minibatch_size", "group_size"):
        _need(getattr(alg, key) >= 1, f"algorithm.{key}", getattr(alg, key), "must be >= 1")
    _need(0 < alg.clip_eps < 1, "algorithm.clip_eps", alg.clip_eps, "must be in (0, 1)")
    _need(alg.dual_clip is None or alg.dual_clip > 1, "algorithm.dual_clip", alg.dual_clip, "must be > 1 or null")
    for key in ("entropy_coef", "kl_coef", "value_coef"):
        _need(getattr(alg, key) >= 0, f"algorithm.{key}", getattr(alg, key), "must be >= 0")
    _need(0 <= alg.gamma <= 1 and 0 <= alg.lam <= 1, "algorithm.gamma/lam", (alg.gamma, alg.lam), "must be in [0, 1]")
    _need(alg.advantage != "grpo" or alg.group_size > 1, "algorithm.group_size", alg.group_size,
          "GRPO needs >= 2 episodes per task")
    _need(alg.optim.lr >= 0, "algorithm.optim.lr", alg.optim.lr, "must be >= 0")
    s = alg.sampling
    _need(s.max_new_tokens >= 1, "algorithm.sampling.max_new_tokens", s.max_new_tokens, "must be >= 1")
    _need(s.temperature > 0, "algorithm.sampling.temperature", s.temperature, "must be > 0")
    n = c.env.envs_per_rank
    _need(n >= 1 and n % alg.group_size == 0, "env.envs_per_rank", n,
          f"must be a positive multiple of algorithm.group_size={alg.group_size}")
    _need(tr.iterations >= 1, "trainer.iterations", tr.iterations, "must be >= 1")
    _need(tr.checkpoint_every >= 0, "trainer.checkpoint_every", tr.checkpoint_every, "must be >= 0 (0: only at the end)")
    uses_kl = alg.kl_coef > 0
    _need(not (uses_kl and c.strategy.name.startswith("deepspeed") and not (lora.enabled and lora.rank > 0)),
          "algorithm.kl_coef", alg.kl_coef, "full fine-tuning with KL under DeepSpeed is not supported; use LoRA")


def check_overrides(config_dir: str, config_name: str, overrides: list[str], schema=TrainConfig, check=None) -> None:
    """Compose and validate like Hydra will, turning Hydra's multi-line composition errors
    (unknown option of a group, unknown key, bad override syntax) into one-line ConfigErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(config_dir, version_base="1.3"):
            load(compose(config_name, overrides=user), schema, check)
    except MissingConfigException as e:
        options = getattr(e, "options", None) or []
        where = str(e).splitlines()[0].replace("In 'config': ", "")
        raise ConfigError(f"{where}; available: {', '.join(options)}" if options else where) from None
    except HydraException as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
        detail = next((ln for ln in lines if "not in struct" in ln or "Error" in ln or "mismatched" in ln), lines[-1])
        raise ConfigError(f"{key}: {detail}" if key else f"{lines[0]} {detail}".strip()) from None
