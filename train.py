"""Train a LoRA policy with online RL on a text environment (or SFT on transcripts).

    python train.py                                   # offline defaults, about a minute on CPU
    python train.py env=db_bench algorithm=grpo model.path=Qwen/Qwen2.5-0.5B-Instruct
    python train.py stage=sft sft.data=transcripts.jsonl   # supervised warm start, same adapter format
    python train.py run_name=exp1                      # re-run: resumes from runs/exp1/checkpoints
    python train.py experiment=db_count_warmstart      # a whole recipe (conf/experiment/): SFT, then RL

Wiring only: compose and validate the config, build the run, fit.
"""

import logging
import os
import sys
from pathlib import Path

# MKL may otherwise pick fewer threads than asked for some calls, changing how sums are split.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parent / "conf")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lorarl.allocator import return_freed_memory

    return_freed_memory()  # freed tensor memory goes back to the OS: peak RSS follows the token budget
    from lorarl.checkpointing import CheckpointError
    from lorarl.logs import discard_run_dir, disk_full, fresh_run_dir, quiet_console, quiet_disk_full_in_threads
    from lorarl.schema import ConfigError, load

    quiet_console(progress_bar=bool(cfg.trainer.progress_bar))
    quiet_disk_full_in_threads()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = fresh_run_dir(run_dir)
    try:
        config = load(cfg)
        import envs  # noqa: F401  registers the env ids that configs name

        from lorarl.factory import build_run

        if config.stage == "warmstart":
            from lorarl.pipeline import warmstart

            warmstart(config, run_dir)
            return
        trainer, module, ckpt_path = build_run(config, run_dir)
        if ckpt_path:
            logging.getLogger("lorarl").info("resuming from %s", ckpt_path)
        trainer.fit(module, ckpt_path=ckpt_path)
    except ConfigError as e:
        if fresh:
            discard_run_dir(run_dir)
        sys.exit(f"config error: {e}")
    except CheckpointError as e:
        from lorarl.ranks import lost_process

        # a rank lost during a save's collective surfaces here: name the rank, not the save
        sys.exit(lost_process(e, run_dir) or f"checkpoint save failed: {e}")
    except Exception as e:  # noqa: BLE001  a full disk or a lost rank is one line; anything else is a bug to show
        from lorarl.ranks import lost_process

        if message := disk_full(e, run_dir) or lost_process(e, run_dir):
            sys.exit(message)
        raise


if __name__ == "__main__":
    if not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg, -m to Hydra
        from lorarl.schema import ConfigError, check_overrides

        try:
            check_overrides(CONF, "config", sys.argv[1:])
        except ConfigError as e:
            sys.exit(f"config error: {e}")
    main()
