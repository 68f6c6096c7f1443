"""Train a LoRA policy with online RL on a text environment (or SFT on transcripts).

    python train.py                                   # offline defaults, about a minute on CPU
    python train.py env=db_bench algorithm=grpo model.path=Qwen/Qwen2.5-0.5B-Instruct
    python train.py stage=sft sft.data=transcripts.jsonl   # supervised warm start, same adapter format
    python train.py run_name=exp1                      # re-run: resumes from runs/exp1/checkpoints

Wiring only: compose and validate the config, build the run, fit.
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parent / "conf")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lorarl.checkpointing import CheckpointError
    from lorarl.logs import quiet_console
    from lorarl.schema import ConfigError, load

    quiet_console(progress_bar=bool(cfg.trainer.progress_bar))
    try:
        config = load(cfg)
        import envs  # noqa: F401  registers the env ids that configs name

        from lorarl.factory import build_run

        trainer, module, ckpt_path = build_run(config, HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    if ckpt_path:
        logging.getLogger("lorarl").info("resuming from %s", ckpt_path)
    try:
        trainer.fit(module, ckpt_path=ckpt_path)
    except CheckpointError as e:
        sys.exit(f"checkpoint save failed: {e}")


if __name__ == "__main__":
    if not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg, -m to Hydra
        from lorarl.schema import ConfigError, check_overrides

        try:
            check_overrides(CONF, "config", sys.argv[1:])
        except ConfigError as e:
            sys.exit(f"config error: {e}")
    main()
