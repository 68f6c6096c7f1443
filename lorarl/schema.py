"""The structured schema of the training and evaluation configs, and their validation.

Defaults have one home: the YAML files under conf/. These dataclasses carry types only (no default
values), so a key missing from the YAML is an error, never a silent second default. ``train.py``
merges the composed Hydra config into them (unknown keys and wrong types are rejected by
OmegaConf), then ``validate`` checks ranges and choices. Every failure is a ``ConfigError`` whose
message names the key and what is allowed, printed as one line. Below ``train.py`` code receives
these typed objects or their parts, never a DictConfig. This module imports no Lightning.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorarl.rewards import RewardTable
from lorarl.specs import ADVANTAGES, LORA_INITS, STRATEGIES, LoraSpec, OptimSpec, PPOSpec, SamplingSpec, StrategySpec, TinyModelSpec

PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")
KL_ESTIMATORS = ("k1", "k2", "k3")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STAGES = ("rl", "sft", "warmstart")


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    path: Optional[str]  # hub id or local directory; null = the built-in tiny model
    trust_remote_code: bool
    tokenizer: str  # built-in model: byte | bpe (trained on the run's text, saved with the base model)
    bpe_vocab_size: int
    tiny: TinyModelSpec
    lora: LoraSpec


@dataclass
class EnvConfig:
    id: str
    kwargs: dict[str, Any]
    system_prompt: Optional[str]
    episode_timeout_s: float  # wall-clock budget of one episode; past it the episode ends task_limit_reached
    step_workers: int  # threads stepping the envs of a turn at once (0: one per env)
    straggler_timeout_s: Optional[float]  # None: rounds wait for every live episode (reproducible); s: at most this long


@dataclass
class AlgorithmConfig(PPOSpec):
    envs_per_rank: int  # the rollout batch: episodes per iteration per process
    optim: OptimSpec
    sampling: SamplingSpec


@dataclass
class PrecisionConfig:
    name: str
    logprob_tolerance: float


@dataclass
class TrainerConfig:
    iterations: int
    seed: int
    threads: Optional[int]  # torch's CPU threads (None: torch's default, one per core)
    accelerator: str
    devices: Any
    num_nodes: int
    checkpoint_every: int
    keep_last: Optional[int]
    transcripts_every: int
    transcripts_count: int
    eval_every: int
    eval_samples: int
    eval_seed: int
    progress_bar: bool
    micro_batch_tokens: int  # tokens per training forward/backward, padding included (lorarl.packing)
    share_prefixes: bool  # episodes that share a prefix compute it once in the training forwards


@dataclass
class LoggerConfig:
    tensorboard: bool
    name: str


@dataclass
class SFTConfig:
    data: Optional[str]  # JSONL of transcripts (stage=sft)
    epochs: int
    batch_size: int  # transcripts per optimizer step
    max_tokens: int  # longer transcripts are cut (keeping the start)
    holdout: float  # share of transcripts held out to report the validation loss
    lr: float  # AdamW learning rate of the supervised stage
    oracle_episodes: int  # stage=warmstart without data: oracle transcripts made from the env
    oracle_first_seed: int  # their first task seed
    replay_coef: float  # RL stages: weight of the SFT loss on sft.data beside RL's, per optimizer step (0: off)
    replay_batch: int  # transcripts of that loss per optimizer step


@dataclass
class TrainConfig:
    model: ModelConfig
    env: EnvConfig
    reward: RewardTable
    algorithm: AlgorithmConfig
    strategy: StrategySpec
    precision: PrecisionConfig
    trainer: TrainerConfig
    logger: LoggerConfig
    sft: SFTConfig
    stage: str  # rl (online RL) | sft (supervised on transcripts) | warmstart (sft, then rl from it)
    run_name: str
    resume: Optional[str]  # "auto": latest checkpoint of this run dir; a path; or null


@dataclass
class EvalAlgorithm:
    sampling: SamplingSpec  # env files set algorithm.sampling.*, so evaluation reads it there too


@dataclass
class EvalConfig:
    adapter: Optional[str]  # checkpoint dir, or "none" for the base model
    compare: list[str]
    baseline: bool  # also evaluate the base model (adapter off), side by side
    model_path: Optional[str]
    mode: str
    use_merged: bool
    merged_path: Optional[str]
    num_samples: int  # tasks
    num_samples_per_task: int  # episodes per task (k of pass@k)
    batch_size: int  # episodes generated at once
    seed: int
    by_task_index: bool
    report: Optional[str]
    log_dir: Optional[str]
    env: EnvConfig  # the env the adapter was trained on (its run's .hydra/config.yaml) unless given
    reward: RewardTable  # the run's reward table unless given
    algorithm: EvalAlgorithm


# ---- loading ---------------------------------------------------------------------------------

def load(cfg: DictConfig, schema=TrainConfig, check=None):
    """Composed Hydra config -> validated schema object, or ConfigError with a one-line message."""
    _strict_booleans(schema, OmegaConf.to_container(cfg, resolve=False))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as e:
        raise _one_line(e) from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(f"{missing[0]}: a value is required (e.g. {missing[0]}=...)")
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise _one_line(e) from None
    (check or validate)(config)
    return config


def _strict_booleans(schema: type, given: dict, prefix: str = "") -> None:
    """OmegaConf reads any integer as a boolean (``greedy=2`` becomes true): a number given for a
    true/false key is refused instead, naming the key."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        if field.name not in given:
            continue
        value, hint, key = given[field.name], hints[field.name], f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _strict_booleans(hint, value, f"{key}.")
        elif bool in (hint, *typing.get_args(hint)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is invalid: expected true or false")


def _one_line(e: OmegaConfBaseException) -> ConfigError:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    return ConfigError(f"{key}: {msg}" if key else msg)


def _need(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _choice(key: str, value, choices) -> None:
    _need(value in choices, key, value, "expected one of " + ", ".join(map(str, choices)))


def _positive(prefix: str, obj, *names: str, zero_ok: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if zero_ok else value > 0)
        _need(ok, f"{prefix}.{name}" if prefix else name, value, "must be >= 0" if zero_ok else "must be > 0")


# ---- validation ------------------------------------------------------------------------------

def validate(c: TrainConfig) -> None:
    _choice("stage", c.stage, STAGES)
    validate_model(c.model)
    validate_algorithm(c.algorithm)
    validate_trainer(c.trainer)
    validate_env(c.env)
    _choice("strategy.name", c.strategy.name, STRATEGIES)
    _positive("strategy", c.strategy, "collective_timeout_s")
    _choice("precision.name", c.precision.name, PRECISIONS)
    _positive("precision", c.precision, "logprob_tolerance")
    _positive("sft", c.sft, "epochs", "batch_size", "max_tokens", "lr", "oracle_episodes", "replay_batch")
    _positive("sft", c.sft, "replay_coef", zero_ok=True)
    replaying = c.stage != "sft" and c.sft.replay_coef > 0
    _need(not replaying or c.stage == "warmstart" or bool(c.sft.data), "sft.replay_coef", c.sft.replay_coef,
          "needs sft.data (the transcripts to replay beside RL), or set sft.replay_coef=0")
    _need(0 <= c.sft.holdout < 1, "sft.holdout", c.sft.holdout, "must be in [0, 1)")
    _need(c.stage != "sft" or bool(c.sft.data), "sft.data", c.sft.data, "stage=sft needs a transcripts file")
    lora = c.model.lora
    _need(not (c.algorithm.kl_coef > 0 and c.strategy.name.startswith("deepspeed") and not (lora.enabled and lora.rank > 0)),
          "algorithm.kl_coef", c.algorithm.kl_coef, "full fine-tuning with KL under DeepSpeed is not supported; use LoRA")
    n, g = c.algorithm.envs_per_rank, c.algorithm.group_size
    _need(n >= 1 and n % g == 0, "algorithm.envs_per_rank", n, f"must be a positive multiple of algorithm.group_size={g}")
    budget = c.trainer.micro_batch_tokens
    if c.stage != "sft":
        _need(budget >= c.algorithm.sampling.max_context_tokens, "trainer.micro_batch_tokens", budget,
              f"must be >= algorithm.sampling.max_context_tokens={c.algorithm.sampling.max_context_tokens} "
              "(an episode is never split)")
    if c.stage != "rl" or replaying:
        _need(budget >= c.sft.max_tokens, "trainer.micro_batch_tokens", budget,
              f"must be >= sft.max_tokens={c.sft.max_tokens} (a transcript is never split)")
    if not c.model.path:
        s = c.algorithm.sampling
        _need(s.max_context_tokens <= c.model.tiny.max_positions, "algorithm.sampling.max_context_tokens",
              s.max_context_tokens, f"must be <= model.tiny.max_positions={c.model.tiny.max_positions}")


def validate_model(m: ModelConfig) -> None:
    lora, tiny = m.lora, m.tiny
    _choice("model.tokenizer", m.tokenizer, ("byte", "bpe"))
    _need(m.bpe_vocab_size >= 300, "model.bpe_vocab_size", m.bpe_vocab_size, "must be >= 300 (256 bytes + specials + merges)")
    _need(isinstance(lora.rank, int) and lora.rank >= 0, "model.lora.rank", lora.rank, "must be >= 0 (0 means full fine-tuning)")
    _need(lora.alpha > 0, "model.lora.alpha", lora.alpha, "must be > 0")
    _need(0 <= lora.dropout < 1, "model.lora.dropout", lora.dropout, "must be in [0, 1)")
    _choice("model.lora.init", lora.init, LORA_INITS)
    tm = lora.target_modules
    _need(tm == "all-linear" or (isinstance(tm, list) and tm and all(isinstance(x, str) and x for x in tm)),
          "model.lora.target_modules", tm, "expected 'all-linear' or a non-empty list of module names")
    _positive("model.tiny", tiny, "hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
              "max_positions", "initializer_range")
    _need(tiny.hidden_size % tiny.num_heads == 0, "model.tiny.num_heads", tiny.num_heads,
          f"must divide model.tiny.hidden_size={tiny.hidden_size}")
    _need(tiny.num_heads % tiny.num_kv_heads == 0, "model.tiny.num_kv_heads", tiny.num_kv_heads,
          f"must divide model.tiny.num_heads={tiny.num_heads}")
    _need((tiny.hidden_size // tiny.num_heads) % 2 == 0, "model.tiny.num_heads", tiny.num_heads,
          "the head size (hidden_size / num_heads) must be even for rotary embeddings")


def validate_algorithm(alg: AlgorithmConfig) -> None:
    _choice("algorithm.advantage", alg.advantage, tuple(ADVANTAGES))
    _choice("algorithm.kl_estimator", alg.kl_estimator, KL_ESTIMATORS)
    for key in ("ppo_epochs", "minibatch_size", "group_size", "envs_per_rank"):
        _need(isinstance(getattr(alg, key), int) and getattr(alg, key) >= 1, f"algorithm.{key}", getattr(alg, key), "must be >= 1")
    _need(0 < alg.clip_eps < 1, "algorithm.clip_eps", alg.clip_eps, "must be in (0, 1)")
    _need(alg.dual_clip is None or alg.dual_clip > 1, "algorithm.dual_clip", alg.dual_clip, "must be > 1 or null")
    _need(alg.value_clip is None or alg.value_clip > 0, "algorithm.value_clip", alg.value_clip, "must be > 0 or null")
    _positive("algorithm", alg, "entropy_coef", "kl_coef", "value_coef", "kl_metric_episodes", zero_ok=True)
    for key in ("gamma", "lam", "baseline_momentum"):
        _need(0 <= getattr(alg, key) <= 1, f"algorithm.{key}", getattr(alg, key), "must be in [0, 1]")
    _need(alg.advantage != "grpo" or alg.group_size > 1, "algorithm.group_size", alg.group_size,
          "GRPO needs >= 2 episodes per task")
    _need(not alg.skip_uniform_groups or alg.advantage == "grpo", "algorithm.skip_uniform_groups",
          alg.skip_uniform_groups, "needs algorithm.advantage=grpo (only its advantages are 0 on a group of equal rewards)")
    o = alg.optim
    _positive("algorithm.optim", o, "lr", "weight_decay", "warmup_steps", zero_ok=True)
    _need(o.max_grad_norm is None or o.max_grad_norm > 0, "algorithm.optim.max_grad_norm", o.max_grad_norm, "must be > 0 or null")
    validate_sampling("algorithm.sampling", alg.sampling)


def validate_sampling(prefix: str, s: SamplingSpec) -> None:
    _positive(prefix, s, "max_new_tokens", "temperature")
    _positive(prefix, s, "prefix_cache_mb", "prompt_lookup", zero_ok=True)
    _choice(f"{prefix}.cache", s.cache, ("dynamic", "static"))
    _need(not s.compile or s.cache == "static", f"{prefix}.compile", s.compile, f"needs {prefix}.cache=static")
    _need(s.max_context_tokens > s.max_new_tokens + 16, f"{prefix}.max_context_tokens", s.max_context_tokens,
          f"must leave room for a prompt: more than {prefix}.max_new_tokens + 16 = {s.max_new_tokens + 16}")


def validate_trainer(tr: TrainerConfig) -> None:
    _need(isinstance(tr.iterations, int) and tr.iterations >= 1, "trainer.iterations", tr.iterations, "must be >= 1")
    _positive("trainer", tr, "checkpoint_every", "eval_every", "transcripts_every", "transcripts_count", zero_ok=True)
    _positive("trainer", tr, "eval_samples", "num_nodes", "micro_batch_tokens")
    _need(isinstance(tr.seed, int) and not isinstance(tr.seed, bool) and 0 <= tr.seed < 2**31, "trainer.seed", tr.seed,
          "must be an integer from 0 to 2**31 - 1")
    _need(tr.threads is None or (isinstance(tr.threads, int) and tr.threads >= 1), "trainer.threads", tr.threads,
          "must be >= 1, or null for torch's default")
    _need(tr.keep_last is None or (isinstance(tr.keep_last, int) and tr.keep_last >= 1), "trainer.keep_last",
          tr.keep_last, "must be >= 1, or null to keep every checkpoint")
    _choice("trainer.accelerator", tr.accelerator, ACCELERATORS)
    if tr.accelerator in ("gpu", "cuda"):
        import torch

        _need(torch.cuda.is_available(), "trainer.accelerator", tr.accelerator,
              "no CUDA GPU on this machine (use cpu or auto)")
    from lorarl.strategies import world_size

    try:
        world_size(tr.devices, tr.num_nodes, tr.accelerator)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def validate_env(e: EnvConfig) -> None:
    _positive("env", e, "episode_timeout_s")
    if e.straggler_timeout_s is not None:
        _positive("env", e, "straggler_timeout_s", zero_ok=True)
    _positive("env", e, "step_workers", zero_ok=True)


def validate_eval(c: EvalConfig) -> None:
    _need(c.adapter is not None, "adapter", c.adapter, "give a checkpoint directory or none")
    _choice("mode", c.mode, ("evaluate", "merge", "both"))
    _need(c.mode == "evaluate" or c.merged_path, "merged_path", c.merged_path, f"required with mode={c.mode}")
    _need(not c.use_merged or c.merged_path, "merged_path", c.merged_path, "required with use_merged=true")
    _positive("", c, "num_samples", "batch_size", "num_samples_per_task")
    _need(c.num_samples_per_task == 1 or not c.algorithm.sampling.greedy, "num_samples_per_task", c.num_samples_per_task,
          "greedy decoding gives one answer k times: set algorithm.sampling.greedy=false (temperature sampling)")
    validate_sampling("algorithm.sampling", c.algorithm.sampling)
    validate_env(c.env)


# Words other trainers use for what lorarl calls otherwise: "save_every" means checkpoint_every.
_SYNONYMS = {"save": "checkpoint", "ckpt": "checkpoint", "epochs": "iterations", "steps": "iterations",
             "learning_rate": "lr", "num_envs": "envs_per_rank", "batch_size": "minibatch_size", "lora_rank": "rank",
             "r": "rank", "temp": "temperature", "eval_interval": "eval_every", "save_interval": "checkpoint_every"}


def _unknown_key(key: str, config_dir: str, config_name: str) -> str:
    """"<key>: no such key", with the closest existing keys: same last part, then the key with
    other trainers' words replaced by lorarl's, then spelling."""
    import difflib

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir, version_base="1.3"):
        known = _flat_keys(OmegaConf.to_container(compose(config_name), resolve=False))
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    renamed = _SYNONYMS.get(leaf) or "_".join(_SYNONYMS.get(w, w) for w in leaf.split("_"))
    by_synonym = [k for k in known if k.rsplit(".", 1)[-1] == renamed] if renamed != leaf else []
    close = same_leaf or sorted(by_synonym, key=lambda k: k.split(".")[0] != key.split(".")[0]) or \
        difflib.get_close_matches(key, known, n=2, cutoff=0.75)
    return f"{key}: no such key" + (f" (did you mean {' or '.join(close[:2])}?)" if close else "")


def _flat_keys(node, prefix="") -> list[str]:
    if not isinstance(node, dict):
        return [prefix[:-1]]
    return [k for name, v in node.items() for k in _flat_keys(v, f"{prefix}{name}.")] + ([prefix[:-1]] if prefix else [])


def check_overrides(config_dir: str, config_name: str, overrides: list[str], build=None) -> None:
    """Compose and validate like Hydra will, turning Hydra's multi-line composition errors
    (unknown option of a group, unknown key, bad override syntax) into one-line ConfigErrors.
    ``build(cfg, overrides)`` turns the composed config into the validated one (default: ``load``)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException

    user = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        with initialize_config_dir(config_dir, version_base="1.3"):
            (build or (lambda cfg, _: load(cfg)))(compose(config_name, overrides=user), user)
    except ValueError as e:  # Hydra reads a number as a number: "precision=16" names no option
        if "group override must be a string" not in str(e):
            raise
        raise ConfigError(_numeric_option(config_dir, user)) from None
    except MissingConfigException as e:
        options = getattr(e, "options", None) or []
        where = str(e).splitlines()[0].replace("In 'config': ", "")
        raise ConfigError(f"{where}; available: {', '.join(options)}" if options else where) from None
    except HydraException as e:
        unknown = re.match(r"Could not override '([^']+)'", str(e))
        if unknown:
            raise ConfigError(_unknown_key(unknown.group(1), config_dir, config_name)) from None
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), None)
        detail = next((ln for ln in lines if "not in struct" in ln or "Error" in ln or "mismatched" in ln), lines[-1])
        raise ConfigError(f"{key}: {detail}" if key else f"{lines[0]} {detail}".strip()) from None


def _numeric_option(config_dir: str, overrides: list[str]) -> str:
    from pathlib import Path

    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        group = Path(config_dir) / key.replace(".", "/")
        if group.is_dir() and re.fullmatch(r"[0-9.eE+-]+", value):
            options = sorted(p.stem for p in group.glob("*.yaml"))
            return f"{key}={value}: no such option; available: {', '.join(options)}"
    return "a config group was given a number; give one of its option names"


def _not_a_run_dir(path) -> None:
    """adapter= names a training run's directory instead of one of its checkpoints: say so, and
    offer the newest checkpoint."""
    from lorarl.checkpointing import checkpoints

    if (path / "adapter_config.json").exists() or (path / "config.json").exists():
        return
    found = checkpoints(path / "checkpoints")
    if found:
        raise ConfigError(f"adapter={path}: this is a training run's directory, not a checkpoint; its newest "
                          f"checkpoint is adapter={found[0]}")
    stages = {stage: checkpoints(path / stage / "checkpoints") for stage in ("rl", "sft")}  # stage=warmstart's layout
    if any(stages.values()):
        stage = "rl" if stages["rl"] else "sft"
        raise ConfigError(f"adapter={path}: this is a warm-start run's directory (sft/, then rl/), not a checkpoint; "
                          f"its newest {stage.upper()} checkpoint is adapter={stages[stage][0]}")
    if (path / ".hydra").is_dir():
        raise ConfigError(f"adapter={path}: this is a training run's directory and it has no checkpoint yet")
    raise ConfigError(f"adapter={path}: no adapter there (no adapter_config.json); give a checkpoint directory "
                      "such as runs/<run>/checkpoints/iter_000010")


RUN_KEYS = ("env", "reward", "algorithm.sampling.max_new_tokens", "algorithm.sampling.max_context_tokens")


def with_run_config(cfg: DictConfig, run_config: str | None, user_keys: set[str]) -> DictConfig:
    """An evaluation of a run's adapter plays the run's env with its reward table and reply
    lengths (from ``run_config``, the run's .hydra/config.yaml), except what the user set on the
    command line. Without a run config the env must be given (``env=...``)."""
    cfg = cfg.copy()
    adapter = cfg.get("adapter")
    if adapter not in (None, "none", "???") and not OmegaConf.is_missing(cfg, "adapter"):
        from pathlib import Path

        if not Path(adapter).is_dir():
            raise ConfigError(f"adapter={adapter}: no such directory")
        _not_a_run_dir(Path(adapter))
    if run_config:
        run = OmegaConf.load(run_config)
        if OmegaConf.select(run, "env.envs_per_rank") is not None:
            run.env.pop("envs_per_rank")  # runs made before the rollout batch moved to algorithm.envs_per_rank
        for key in RUN_KEYS:
            if not any(u == key or u.startswith(key + ".") for u in user_keys) and OmegaConf.select(run, key) is not None:
                # merged onto this config's own: keys a run from an older lorarl lacks keep their defaults
                OmegaConf.update(cfg, key, OmegaConf.select(run, key), merge=True, force_add=True)
    if OmegaConf.select(cfg, "env.id") is None:
        raise ConfigError("env: no env given and no training run config beside the adapter; pass env=db_bench "
                          "(or os_interaction, target_word)")
    return cfg
