"""Build the objects of a training run from a validated TrainConfig.

This is the only place that turns config into objects; everything it calls takes plain typed
arguments. Errors a user can fix (a model that does not load, LoRA targets that match nothing, a
strategy this machine cannot run) become one-line ConfigErrors, before any training starts.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch

from lorarl import checkpointing as ckpt
from lorarl.callbacks import AdapterCheckpoint, IterationLog, IterationProgress, PeriodicEvaluation
from lorarl.environments import build_envs
from lorarl.evaluation import EvalSpec
from lorarl.lora import apply_lora, is_lora
from lorarl.models import build_tiny_model, load_pretrained_model
from lorarl.module import LoopSpec, RLModule
from lorarl.policy import Policy
from lorarl.ppo import PPOSpec
from lorarl.rollout import RolloutCollector
from lorarl.schema import ConfigError, ModelConfig, TrainConfig
from lorarl.strategies import build_strategy, world_size
from lorarl.tokenizer import build_byte_tokenizer, load_tokenizer

BASE_MODEL_DIR = "base_model"


def build_base(model: ModelConfig, run_dir: Path, dtype: torch.dtype = torch.float32):
    """(tokenizer, base LM, path a user can load the base from).

    The built-in tiny model is written to ``run_dir/base_model`` so its adapters load anywhere
    PEFT loads: ``adapter_config.json`` points there."""
    if model.path:
        if model.path.startswith(("/", ".", "~")) and not Path(model.path).expanduser().exists():
            raise ConfigError(f"model.path={model.path!r}: no such directory")
        try:
            tok = load_tokenizer(model.path, model.trust_remote_code)
            return tok, load_pretrained_model(model.path, dtype, model.trust_remote_code), model.path
        except (OSError, ValueError, KeyError) as e:  # missing files, unknown model_type, no chat template
            raise ConfigError(f"model.path={model.path!r}: cannot load ({str(e).splitlines()[0]})") from None
    tok = build_byte_tokenizer()
    lm = build_tiny_model(model.tiny, len(tok), tok.eos_token_id, tok.pad_token_id).to(dtype)
    base_dir = run_dir / BASE_MODEL_DIR
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not base_dir.exists():
        tmp = run_dir / f".tmp-{BASE_MODEL_DIR}"
        lm.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        tmp.rename(base_dir)
    return tok, lm, str(base_dir.resolve())


def build_policy(lm, model: ModelConfig, base_path: str, with_value_head: bool, keep_reference: bool) -> Policy:
    try:
        lm = apply_lora(lm, model.lora)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    if is_lora(lm):
        for cfg in lm.peft_config.values():
            cfg.base_model_name_or_path = base_path  # what PeftModel.from_pretrained will load
    return Policy(lm, with_value_head=with_value_head, keep_reference=keep_reference)


def build_trainer(config: TrainConfig, run_dir: Path, strategy, callbacks: list) -> L.Trainer:
    tr = config.trainer
    logger = False
    if config.logger.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(str(run_dir), name=config.logger.name, version="")
    callbacks = [*callbacks, IterationLog(tr.iterations)]
    if tr.progress_bar:
        callbacks.append(IterationProgress(tr.iterations))
    return L.Trainer(
        accelerator=tr.accelerator, devices=tr.devices, num_nodes=tr.num_nodes, strategy=strategy,
        precision=config.precision.name, max_epochs=tr.iterations, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(run_dir),
    )


def build_run(config: TrainConfig, run_dir: str | Path) -> tuple[L.Trainer, RLModule, str | None]:
    run_dir = Path(run_dir)
    alg, tr = config.algorithm, config.trainer
    spec = PPOSpec.of(alg)
    try:  # first: a strategy this machine cannot run should fail before any model is built
        size = world_size(tr.devices, tr.num_nodes, tr.accelerator)
        strategy, plan = build_strategy(config.strategy, alg.optim.max_grad_norm, size, config.precision.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    # Before anything random is built: LoRA's A matrices and the value head must come out the
    # same in every run and on every rank, or resumed and distributed runs diverge.
    L.seed_everything(tr.seed, workers=True, verbose=False)
    dtype = torch.bfloat16 if config.precision.name == "bf16-true" else torch.float32
    tok, lm, base_path = build_base(config.model, run_dir, dtype)
    if config.strategy.activation_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = build_policy(lm, config.model, base_path, spec.uses_critic, alg.kl_coef > 0)
    env = config.env
    collector = RolloutCollector(build_envs(env, alg.envs_per_rank), tok, alg.sampling, config.reward,
                                 env.system_prompt, env.episode_timeout_s, env.step_workers,
                                 env.straggler_timeout_s)
    loop = LoopSpec(
        iterations=tr.iterations, envs_per_rank=alg.envs_per_rank, seed=tr.seed,
        logprob_tolerance=config.precision.logprob_tolerance, temperature=alg.sampling.temperature,
        merge_adapter=merge_for_sampling(alg.sampling.merge_adapter, plan, config.strategy.name) and is_lora(policy.lm),
        transcripts_every=tr.transcripts_every, transcripts_count=tr.transcripts_count,
    )
    module = RLModule(policy, collector, spec, alg.optim, loop, plan)
    callbacks = [AdapterCheckpoint(run_dir / "checkpoints", tr.checkpoint_every, tr.keep_last)]
    if tr.eval_every:
        greedy = replace(alg.sampling, greedy=True)
        eval_collector = RolloutCollector(build_envs(env, min(alg.envs_per_rank, tr.eval_samples)), tok, greedy,
                                          config.reward, env.system_prompt, env.episode_timeout_s, env.step_workers,
                                 env.straggler_timeout_s)
        callbacks.append(PeriodicEvaluation(eval_collector, EvalSpec(tr.eval_samples, seed=tr.eval_seed), tr.eval_every))
    trainer = build_trainer(config, run_dir, strategy, callbacks)
    return trainer, module, resume_path(config.resume, run_dir / "checkpoints")


def merge_for_sampling(asked: bool | None, plan, strategy: str) -> bool:
    """null: merge wherever the strategy keeps whole weights; true where it cannot is an error."""
    if asked and not plan.can_merge:
        raise ConfigError(f"algorithm.sampling.merge_adapter=true is invalid: under {strategy} the weights are "
                          "sharded, and merging needs them whole (use null or false)")
    return plan.can_merge if asked is None else asked


def resume_path(resume: str | None, ckpt_root: Path) -> str | None:
    """Lightning checkpoint to continue from: "auto" picks the newest verified one, if any."""
    if resume is None:
        return None
    if resume == "auto":
        found = ckpt.latest_checkpoint(ckpt_root)
        return str(found / ckpt.TRAINER_STATE) if found else None
    path = Path(resume)
    problem = ckpt.verify(path)
    if problem:
        raise ConfigError(f"resume={resume!r}: {problem}")
    return str(path / ckpt.TRAINER_STATE)
