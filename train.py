"""Train a LoRA policy with online RL on a text environment.

    python train.py                                   # offline defaults, well under a minute on CPU
    python train.py env=db_bench algorithm=grpo model.path=Qwen/Qwen2.5-0.5B-Instruct
    python train.py run_name=exp1                      # re-run: resumes from runs/exp1/checkpoints

Wiring only: compose and validate the config, build the run, fit.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parent / "conf")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lorarl.schema import ConfigError, load

    try:
        config = load(cfg)
        import envs  # noqa: F401  registers the env ids that configs name

        from lorarl.factory import build_run

        trainer, module, ckpt_path = build_run(config, HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    trainer.fit(module, ckpt_path=ckpt_path)


if __name__ == "__main__":
    if not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg, -m to Hydra
        from lorarl.schema import ConfigError, check_overrides

        try:
            check_overrides(CONF, "config", sys.argv[1:])
        except ConfigError as e:
            sys.exit(f"config error: {e}")
    main()
