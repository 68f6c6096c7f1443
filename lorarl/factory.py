"""Build the objects of a training run from a validated TrainConfig.

This is the only place that turns config into objects; everything it calls takes plain typed
arguments. Errors a user can fix (a model that does not load, LoRA targets that match nothing, a
strategy this machine cannot run) become one-line ConfigErrors, before any training starts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import torch

from lorarl import checkpointing as ckpt
from lorarl.callbacks import AdapterCheckpoint, IterationLog, IterationProgress, PeriodicEvaluation, RunSummary
from lorarl.callbacks.progress import RL_FIELDS, SFT_FIELDS
from lorarl.environments import build_envs, make_collector
from lorarl.evaluation import EvalSpec
from lorarl.lora import apply_lora, check_targets, is_lora
from lorarl.models import build_tiny_model, load_pretrained_model, missing_local_path
from lorarl.packaged import resolve
from lorarl.module import LoopSpec, RLModule
from lorarl.policy import Policy
from lorarl.ranks import RankRegistry
from lorarl.schema import ConfigError, ModelConfig, TrainConfig
from lorarl.specs import PPOSpec
from lorarl.strategies import build_strategy, check_launcher, uses_gpu, world_size
from lorarl.tokenizer import build_byte_tokenizer, load_tokenizer, train_bpe_tokenizer

BASE_MODEL_DIR = "base_model"
log = logging.getLogger("lorarl")


def build_base(model: ModelConfig, run_dir: Path, dtype: torch.dtype = torch.float32, corpus=None):
    """(tokenizer, base LM, path a user can load the base from).

    The built-in tiny model is written to ``run_dir/base_model`` with its tokenizer (the byte one,
    or a BPE trained on ``corpus()``) so its adapters load anywhere PEFT loads:
    ``adapter_config.json`` points there. A re-run (resume) loads that directory back."""
    if model.path:
        _local_path_exists(model)
        try:
            tok = load_tokenizer(model.path, model.trust_remote_code)
            return tok, load_pretrained_model(model.path, dtype, model.trust_remote_code), model.path
        except (OSError, ValueError, KeyError) as e:  # missing files, unknown model_type, no chat template
            raise ConfigError(f"model.path={model.path!r}: cannot load ({str(e).splitlines()[0]})") from None
    base_dir = run_dir / BASE_MODEL_DIR
    if base_dir.is_dir():
        return load_tokenizer(str(base_dir)), load_pretrained_model(str(base_dir), dtype), str(base_dir.resolve())
    tok = build_byte_tokenizer() if model.tokenizer == "byte" else train_bpe_tokenizer(corpus(), model.bpe_vocab_size)
    lm = build_tiny_model(model.tiny, len(tok), tok.eos_token_id, tok.pad_token_id).to(dtype)
    if first_process():  # every process builds the same weights; one writes them (the run dir may be shared by nodes)
        tmp = run_dir / f".tmp-{BASE_MODEL_DIR}"
        try:
            lm.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            tmp.rename(base_dir)
        except Exception:  # a full disk (safetensors raises its own error type): no half-written copy stays
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return tok, lm, str(base_dir.resolve())


def first_process() -> bool:
    """Whether this is global rank 0, known before the process group exists: torchrun sets RANK,
    SLURM's srun SLURM_PROCID, Lightning's own launcher NODE_RANK and LOCAL_RANK. On several nodes
    the run directory is usually on a filesystem they share: only this process writes to it
    before training starts."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return int(env.get("NODE_RANK", "0")) == 0 and int(env.get("LOCAL_RANK", "0")) == 0


def _local_path_exists(model: ModelConfig) -> None:
    if missing_local_path(model.path):
        raise ConfigError(f"model.path={model.path!r}: no such directory")


def check_lora_first(model: ModelConfig) -> None:
    """LoRA targets and rank checked on the model's skeleton (on the meta device: no weights), so
    that a bad value costs neither a model build nor a base_model/ written to disk."""
    if not model.lora.active or model.lora.lora_path:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    if model.path:
        _local_path_exists(model)

    try:
        # resolved before the meta context: a packaged model's first use dequantizes real weights
        local = resolve(model.path) if model.path else None
        with torch.device("meta"):
            if model.path:
                config = AutoConfig.from_pretrained(local, trust_remote_code=model.trust_remote_code)
                skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=model.trust_remote_code)
            else:
                skeleton = build_tiny_model(model.tiny, model.tiny.vocab_size or 512, 0, 0)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"model.path={model.path!r}: cannot load ({str(e).splitlines()[0]})") from None
    try:
        check_targets(skeleton, model.lora)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def warm_start(model: ModelConfig) -> ModelConfig:
    """Starting from a saved adapter (``model.lora.lora_path``) of the built-in model means starting
    from its base model, tokenizer included: the one its adapter_config.json names."""
    if not model.lora.lora_path or model.path:
        return model
    cfg = Path(model.lora.lora_path) / "adapter_config.json"
    if not cfg.is_file():
        raise ConfigError(f"model.lora.lora_path={model.lora.lora_path!r}: no adapter_config.json there")
    return replace(model, path=json.loads(cfg.read_text())["base_model_name_or_path"])


def env_corpus(env_config, samples: int = 256):
    """Text to train a BPE tokenizer on for RL from scratch: the env's first observations."""
    def texts():
        env = build_envs(env_config, 1)[0]
        try:
            for seed in range(samples):
                obs, info = env.reset(seed=seed)
                yield from [m["content"] for m in info.get("history") or []] + [obs]
        finally:
            env.close()
    return texts


def build_policy(lm, model: ModelConfig, base_path: str, with_value_head: bool, keep_reference: bool) -> Policy:
    try:
        lm = apply_lora(lm, model.lora)
    except (ValueError, OSError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    if is_lora(lm):
        for cfg in lm.peft_config.values():
            cfg.base_model_name_or_path = base_path  # what PeftModel.from_pretrained will load
    # A loaded model comes in eval mode; training starts in train mode.
    return Policy(lm, with_value_head=with_value_head, keep_reference=keep_reference).train()


def build_trainer(config: TrainConfig, run_dir: Path, strategy, callbacks: list, resume_from: str | None = None,
                  steps: int | None = None, **kwargs) -> L.Trainer:
    """The Lightning Trainer of either stage; one Lightning epoch is an RL iteration or an SFT
    epoch (of ``steps`` optimizer steps, which the progress bar counts)."""
    tr, sft = config.trainer, config.stage == "sft"
    epochs = config.sft.epochs if sft else tr.iterations
    logger = False
    if config.logger.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        # A resumed run redoes what came after its checkpoint: TensorBoard drops the events it had
        # logged past that step, so no iteration shows twice.
        purge = resumed_step(resume_from, sft)
        logger = TensorBoardLogger(str(run_dir), name=config.logger.name, version="",
                                   **({"purge_step": purge} if purge is not None else {}))
    random_model = not (config.model.path or config.model.lora.lora_path)
    callbacks = [*callbacks, IterationLog(epochs, sft), RunSummary(run_dir, bool(config.logger.tensorboard), sft, random_model),
                 RankRegistry()]
    if tr.progress_bar:
        callbacks.append(IterationProgress(epochs * steps, SFT_FIELDS, "SFT steps", per_step=True) if sft and steps
                         else IterationProgress(epochs, RL_FIELDS, "iterations"))
    return L.Trainer(
        accelerator=tr.accelerator, devices=tr.devices, num_nodes=tr.num_nodes, strategy=strategy,
        precision=config.precision.name, max_epochs=epochs, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(run_dir), **kwargs,
    )


def _strategy(config: TrainConfig):
    """(Lightning strategy, sharding plan), or a ConfigError before any model is built."""
    tr = config.trainer
    try:
        check_launcher(tr.num_nodes)
        size = world_size(tr.devices, tr.num_nodes, tr.accelerator)
        return build_strategy(config.strategy, config.algorithm.optim.max_grad_norm, size, config.precision.name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


CHECKPOINTING_FROM = 50_000_000  # parameters: strategy.activation_checkpointing=null turns it on from here


def activation_checkpointing(config: TrainConfig, lm: torch.nn.Module) -> bool:
    """strategy.activation_checkpointing; null: on for models of ``CHECKPOINTING_FROM``
    parameters or more, whose activations are what fills memory (SmolLM2-135M: about 2.5 MB per
    token of a micro-batch without it, 0.9 MB with it), off for small ones (the built-in model)."""
    asked = config.strategy.activation_checkpointing
    return sum(p.numel() for p in lm.parameters()) >= CHECKPOINTING_FROM if asked is None else asked


def cpu_threads(tr) -> int | None:
    """torch's CPU threads for this process: trainer.threads, or, where that is null and several
    processes of the run share this machine's CPU (ddp/fsdp with devices > 1 on CPU), each one's
    share of the cores. torch's default of a thread per core in every process oversubscribes the
    CPU, and its threads then wait on each other at every op (2 processes x 2 threads on 2 cores
    ran about 2x slower than 1 thread each). None: leave torch's default (OMP_NUM_THREADS, where
    the user set it, is their choice)."""
    if tr.threads or "OMP_NUM_THREADS" in os.environ:
        return tr.threads
    per_node = world_size(tr.devices, 1, tr.accelerator)
    return None if uses_gpu(tr.accelerator) or per_node < 2 else max(1, torch.get_num_threads() // per_node)


def _seeded_base(config: TrainConfig, run_dir: Path, corpus):
    """(model config after warm start, tokenizer, base LM, base path), built after seeding."""
    if threads := cpu_threads(config.trainer):
        torch.set_num_threads(threads)
    # Reductions split across threads add in another order: a run is bit-exact for its thread count.
    if first_process():  # the run's log is one file, for every node
        logging.getLogger("lorarl.run").info("torch CPU threads: %d", torch.get_num_threads())
    # Before anything random is built: LoRA's A matrices and the value head must come out the
    # same in every run and on every rank, or resumed and distributed runs diverge.
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    dtype = torch.bfloat16 if config.precision.name == "bf16-true" else torch.float32
    model = warm_start(config.model)
    tok, lm, base_path = build_base(model, run_dir, dtype, corpus)
    if activation_checkpointing(config, lm):  # recompute each decoder layer in backward (generation is unaffected)
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok, lm, base_path


def build_run(config: TrainConfig, run_dir: str | Path):
    """(trainer, module, checkpoint to resume from) for ``config.stage``."""
    if config.stage == "sft":
        return build_sft_run(config, Path(run_dir))
    run_dir = Path(run_dir)
    alg, tr = config.algorithm, config.trainer
    spec = PPOSpec.of(alg)
    strategy, plan = _strategy(config)
    check_lora_first(config.model)
    resume_from = resume_path(config.resume, run_dir / "checkpoints")
    replayed = _transcripts(config.sft.data) if config.sft.replay_coef > 0 else None  # a bad file fails before the model loads
    model, tok, lm, base_path = _seeded_base(config, run_dir, env_corpus(config.env))
    policy = build_policy(lm, model, base_path, spec.uses_critic, alg.kl_coef > 0)
    env = config.env
    collector = make_collector(env, build_envs(env, alg.envs_per_rank), tok, alg.sampling, config.reward)
    loop = LoopSpec(
        iterations=tr.iterations, envs_per_rank=alg.envs_per_rank, seed=tr.seed,
        logprob_tolerance=config.precision.logprob_tolerance, temperature=alg.sampling.temperature,
        merge_adapter=merge_for_sampling(alg.sampling.merge_adapter, plan, config.strategy.name) and is_lora(policy.lm),
        transcripts_every=tr.transcripts_every, transcripts_count=tr.transcripts_count,
        micro_batch_tokens=tr.micro_batch_tokens, share_prefixes=tr.share_prefixes,
    )
    replay = _replay(config, tok, replayed) if replayed is not None else None
    module = RLModule(policy, collector, spec, alg.optim, loop, plan, replay)
    callbacks = [AdapterCheckpoint(run_dir / "checkpoints", tr.checkpoint_every, tr.keep_last, tok)]
    if tr.eval_every:
        greedy = replace(alg.sampling, greedy=True)
        eval_collector = make_collector(env, build_envs(env, min(alg.envs_per_rank, tr.eval_samples)), tok, greedy,
                                        config.reward)
        record = {"env": asdict(env), "sampling": asdict(greedy), "num_samples": tr.eval_samples, "seed": tr.eval_seed}
        callbacks.append(PeriodicEvaluation(eval_collector, EvalSpec(tr.eval_samples, seed=tr.eval_seed), tr.eval_every, record))
    return build_trainer(config, run_dir, strategy, callbacks, resume_from), module, resume_from


def _transcripts(path: str) -> list:
    from lorarl import transcripts

    try:
        return transcripts.read(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"sft.data={path!r}: {str(e).splitlines()[0]}") from None


def _replay(config: TrainConfig, tok, data: list):
    """Every transcript of sft.data (``data``), encoded as SFT encodes them, to replay beside RL."""
    from lorarl import sft
    from lorarl.rollout import ChatFramer

    framer = ChatFramer(tok, config.env.system_prompt)
    items = sft.Transcripts.encode(data, framer, config.sft.max_tokens)
    if not len(items):
        raise ConfigError(f"sft.data={config.sft.data!r}: no transcript with an assistant turn to replay")
    return sft.Replay(items, config.sft.replay_batch, config.sft.replay_coef, tok.pad_token_id)


def build_sft_run(config: TrainConfig, run_dir: Path):
    """Supervised fine-tuning on transcripts (``lorarl.sft``), saving the same adapter checkpoints."""
    from lorarl import sft
    from lorarl.rollout import ChatFramer

    data = _transcripts(config.sft.data)
    strategy, plan = _strategy(config)
    check_lora_first(config.model)
    resume_from = resume_path(config.resume, run_dir / "checkpoints")
    corpus = lambda: (m["content"] for messages, _ in data for m in messages)  # noqa: E731
    model, tok, lm, base_path = _seeded_base(config, run_dir, corpus)
    policy = build_policy(lm, model, base_path, with_value_head=False, keep_reference=False)
    framer = ChatFramer(tok, config.env.system_prompt)
    spec = sft.SFTSpec(config.sft.epochs, config.sft.batch_size, config.sft.max_tokens, config.sft.holdout,
                       config.trainer.seed)
    train, val = sft.split(data, spec.holdout, spec.seed)
    encode = lambda part: sft.Transcripts.encode(part, framer, spec.max_tokens)  # noqa: E731
    optim = replace(config.algorithm.optim, lr=config.sft.lr)
    module = sft.SFTModule(policy, encode(train), encode(val), spec, optim, tok.pad_token_id, plan,
                           config.trainer.micro_batch_tokens, config.trainer.share_prefixes)
    callbacks = [AdapterCheckpoint(run_dir / "checkpoints", 1, config.trainer.keep_last, tok)]
    per_rank = -(-len(module.train_set) // world_size(config.trainer.devices, config.trainer.num_nodes,
                                                    config.trainer.accelerator))
    trainer = build_trainer(config, run_dir, strategy, callbacks, resume_from, -(-per_rank // spec.batch_size),
                            limit_val_batches=1.0 if len(val) else 0)
    return trainer, module, resume_from


def merge_for_sampling(asked: bool | None, plan, strategy: str) -> bool:
    """null: merge wherever the strategy keeps whole weights; true where it cannot is an error."""
    if asked and not plan.can_merge:
        raise ConfigError(f"algorithm.sampling.merge_adapter=true is invalid: under {strategy} the weights are "
                          "sharded, and merging needs them whole (use null or false)")
    return plan.can_merge if asked is None else asked


def resume_path(resume: str | None, ckpt_root: Path) -> str | None:
    """Lightning checkpoint to continue from: "auto" picks the newest verified one, if any (and
    refuses when there are checkpoints and none verifies); null starts over, moving this run's
    checkpoints aside first so that none is overwritten."""
    if resume is None:
        aside = ckpt.move_aside(ckpt_root, time.strftime("%Y%m%d-%H%M%S")) if first_process() else None
        if aside:
            log.warning("resume=null: starting over; this run's earlier checkpoints are kept in %s", aside)
        return None
    if resume == "auto":
        try:
            found = ckpt.latest_checkpoint(ckpt_root)
        except ckpt.CheckpointError as e:
            raise ConfigError(f"resume=auto: {e}") from None
        return str(found / ckpt.TRAINER_STATE) if found else None
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"resume={resume!r}: no such checkpoint directory")
    problem = ckpt.verify(path)
    if problem:
        raise ConfigError(f"resume={resume!r}: {problem}")
    return str(path / ckpt.TRAINER_STATE)


def resumed_step(ckpt_path: str | None, sft: bool) -> int | None:
    """The first TensorBoard step a run resumed from ``ckpt_path`` logs again (RL logs at the
    1-based iteration, SFT at the batch count), from its training_stats.json; None without one."""
    if not ckpt_path:
        return None
    try:
        stats = json.loads((Path(ckpt_path).parent / ckpt.STATS_FILE).read_text())
        return int(stats["global_step"]) if sft else int(stats["iteration"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return None
