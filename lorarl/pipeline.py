"""``stage=warmstart``: supervised fine-tuning on solved transcripts, then RL from its adapter, in
one run, with the held-out success of the policy before RL and after it.

A random-weight model never stumbles on a correct answer, so RL alone has nothing to reinforce;
a warm start gives it a policy that sometimes succeeds. The transcripts are ``sft.data``, or,
when that is null, ``sft.oracle_episodes`` episodes the env's oracle solved by executing its
solution (task seeds from ``sft.oracle_first_seed``, far from the evaluation seeds). The SFT stage
writes to ``<run>/sft``, RL to ``<run>/rl``; a re-run resumes each where it stopped. Held-out
success is greedy, on ``trainer.eval_samples`` tasks from ``trainer.eval_seed`` (the seeds RL's
periodic evaluation uses).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from lorarl import checkpointing as ckpt
from lorarl.callbacks.summary import next_steps, say
from lorarl.schema import ConfigError, TrainConfig


def warmstart(config: TrainConfig, run_dir: Path) -> dict:
    from lorarl import transcripts
    from lorarl.factory import build_run

    data = Path(config.sft.data) if config.sft.data else run_dir / "transcripts.jsonl"
    if not config.sft.data and not data.exists():
        first = config.sft.oracle_first_seed
        seeds = range(first, first + config.sft.oracle_episodes)
        if not transcripts.write(transcripts.oracle_transcripts(config.env.id, config.env.kwargs, seeds), data):
            raise ConfigError(f"env {config.env.id}: its oracle solved none of {len(seeds)} tasks; give sft.data=")
    sft_config = replace(config, stage="sft", sft=replace(config.sft, data=str(data)))
    trainer, module, resume = build_run(sft_config, run_dir / "sft")
    trainer.fit(module, ckpt_path=resume)
    sft_adapter = _newest(run_dir / "sft")
    before = held_out_success(config, sft_adapter)
    say([f"held-out success after SFT: {before:.3f} ({config.trainer.eval_samples} tasks); now RL"])
    lora = replace(config.model.lora, lora_path=str(sft_adapter))
    rl_config = replace(sft_config, stage="rl", model=replace(config.model, lora=lora))  # sft.data: for sft.replay_coef
    trainer, module, resume = build_run(rl_config, run_dir / "rl")
    trainer.fit(module, ckpt_path=resume)
    rl_adapter = _newest(run_dir / "rl")
    after = held_out_success(config, rl_adapter)
    say([f"held-out success: {before:.3f} after SFT -> {after:.3f} after {config.trainer.iterations} RL iterations "
         f"({config.trainer.eval_samples} tasks, greedy)",
         *next_steps(run_dir / "rl", rl_adapter, bool(config.logger.tensorboard))])
    return {"before": before, "after": after, "sft_adapter": str(sft_adapter), "rl_adapter": str(rl_adapter)}


def held_out_success(config: TrainConfig, adapter: Path) -> float:
    """Greedy success of ``adapter`` on the held-out tasks RL's periodic evaluation plays."""
    from lorarl.environments import build_envs, make_collector
    from lorarl.evaluation import EvalSpec, evaluate_policy
    from lorarl.factory import build_base, build_policy, warm_start

    model = warm_start(replace(config.model, lora=replace(config.model.lora, lora_path=str(adapter))))
    tok, lm, base = build_base(model, adapter.parent.parent, corpus=None)  # model.path is set: nothing is built
    policy = build_policy(lm, model, base, with_value_head=False, keep_reference=False).eval()
    samples = config.trainer.eval_samples
    collector = make_collector(config.env, build_envs(config.env, min(samples, 16)), tok,
                               replace(config.algorithm.sampling, greedy=True), config.reward)
    try:
        episodes, _ = evaluate_policy(policy, collector, EvalSpec(samples, config.trainer.eval_seed))
    finally:
        collector.close()
    return sum(e.outcome == "correct" for e in episodes) / len(episodes)


def _newest(run_dir: Path) -> Path:
    found = ckpt.checkpoints(run_dir / "checkpoints")
    if not found:
        raise ConfigError(f"{run_dir}: the stage saved no checkpoint")
    return found[0]
