"""The settings each part of lorarl is built from, as plain dataclasses. Nothing here imports
torch, transformers or Lightning: the config schema (``schema``) validates a run against these
before anything heavy loads, so a bad value costs a second, not the import of a deep-learning
stack. Defaults live in the YAML files under conf/, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional


LORA_INITS = ("default", "gaussian", "pissa", "olora")


@dataclass
class LoraSpec:
    enabled: bool  # False (or rank 0) trains every base weight instead
    rank: int
    alpha: float  # scaling is alpha / rank
    dropout: float
    target_modules: Any  # "all-linear" or a list of module names
    exclude_modules: list[str]
    init: str  # "default": PEFT's zero-B (adapter starts as identity) | gaussian | pissa | olora
    lora_path: Optional[str]  # warm-start from this saved adapter directory

    @property
    def active(self) -> bool:
        return self.enabled and self.rank > 0


@dataclass
class TinyModelSpec:
    """Shape of the built-in random-weight Qwen2 (a real architecture, just small); defaults in
    conf/model/tiny.yaml. Its initializer_range is 0.2: HF's 0.02 gives near-zero logits, and
    behind RMSNorm a LoRA on the (unadapted-by-default) lm_head inputs can then move logits by
    ~1 nat only, so the policy can never become peaked."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_positions: int
    initializer_range: float
    init_seed: int  # base weights depend only on this, so every run shares one base model
    vocab_size: Optional[int]  # null: the tokenizer's (a larger one only adds unused rows: for benchmarks)


# Advantage estimators by name (``ppo.ESTIMATORS`` implements them), and whether each trains a critic.
ADVANTAGES = {"gae": True, "grpo": False, "reinforce": False}


@dataclass
class PPOSpec:
    """The update's settings; defaults live in conf/algorithm/ppo.yaml."""

    advantage: str  # a key of ADVANTAGES
    group_size: int  # episodes per task (GRPO needs > 1)
    ppo_epochs: int  # passes over each rollout batch
    minibatch_size: int  # episodes per optimizer step
    clip_eps: float  # ratio clip range
    dual_clip: Optional[float]  # e.g. 3.0: bound the loss of negative-advantage tokens
    entropy_coef: float
    kl_coef: float  # weight of KL(policy || base)
    kl_estimator: str  # k1 | k2 | k3
    kl_metric_episodes: int  # with kl_coef 0: episodes whose KL to the base is measured for the log (0: none)
    value_coef: float
    value_clip: Optional[float]
    gamma: float
    lam: float
    normalize_advantages: bool  # whiten GAE advantages over the batch's action tokens
    grpo_scale_by_std: bool
    baseline_momentum: float  # REINFORCE running-mean baseline
    skip_uniform_groups: bool  # GRPO: update only on the groups whose rewards differ

    @classmethod
    def of(cls, config) -> "PPOSpec":
        """The PPO fields of a config object that has them (the schema's AlgorithmConfig)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @property
    def uses_critic(self) -> bool:
        return ADVANTAGES[self.advantage]


@dataclass
class OptimSpec:
    lr: float
    weight_decay: float
    warmup_steps: int  # optimizer steps of linear warm-up, then constant
    max_grad_norm: Optional[float]


@dataclass
class SamplingSpec:
    """How replies are sampled; defaults live in conf/algorithm/ppo.yaml (and the env files)."""

    max_new_tokens: int  # per turn
    temperature: float  # also applied when logprobs are recomputed for training
    max_context_tokens: int  # an episode that would outgrow this ends as "context_limit"
    greedy: bool  # argmax decoding (evaluation)
    merge_adapter: Optional[bool]  # generate with the adapter merged into the weights; null: wherever possible
    cache: str  # dynamic | static (KV cache of generation)
    compile: bool  # static cache only: torch.compile the decoding step (CUDA graphs on GPU)
    lean_steps: bool  # dynamic cache, Qwen2/Llama: decode through the model's submodules (lorarl.decoding)
    prefix_cache_mb: int  # lean steps: memory for reused keys and values of computed prefixes (0: off)
    prompt_lookup: int  # greedy, lean steps: tokens per step drafted from the row's context and checked at once (0: off)


STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3")


@dataclass
class StrategySpec:
    """Defaults in conf/strategy/auto.yaml."""

    name: str  # auto | ddp | fsdp (FSDP2) | deepspeed_stage_2 | deepspeed_stage_3
    activation_checkpointing: Optional[bool]  # recompute decoder activations in backward; None: for pretrained models
    offload_optimizer: bool  # DeepSpeed only: keep optimizer state on CPU
    process_group_backend: Optional[str]  # nccl on GPU, gloo on CPU when unset
    collective_timeout_s: float  # how long a process waits for the others in a collective before it stops
