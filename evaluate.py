"""Evaluate saved adapters (dynamic or merged), against the base model, per task type.

    python evaluate.py adapter=runs/<run>/checkpoints/iter_000010 num_samples=100
    python evaluate.py adapter=DIR compare=[OTHER_DIR] env=db_bench env.kwargs.source=agentbench ...
    python evaluate.py adapter=DIR mode=both merged_path=merged/ use_merged=true

A run's adapter is evaluated on the run's env, reward table and reply lengths (its
.hydra/config.yaml) unless given here. Wiring only: compose and validate the config, then
lorarl.evaluation.run_evaluation.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parent / "conf")


def _config(cfg: DictConfig, overrides: list[str]):
    from lorarl.evaluation import run_config_of
    from lorarl.schema import EvalConfig, load, validate_eval, with_run_config

    user_keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    cfg = with_run_config(cfg, run_config_of(cfg.get("adapter")), user_keys)
    return load(cfg, EvalConfig, validate_eval)


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lorarl.allocator import return_freed_memory

    return_freed_memory()  # freed tensor memory goes back to the OS: peak RSS follows the token budget
    from lorarl.evaluation import EvalError
    from lorarl.logs import quiet_console
    from lorarl.schema import ConfigError

    quiet_console(progress_bar=False)
    try:
        config = _config(cfg, list(HydraConfig.get().overrides.task))
        import envs  # noqa: F401  registers the env ids that configs name

        from lorarl.evaluation import run_evaluation

        run_evaluation(config)
    except (ConfigError, EvalError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    if not any(a.startswith("-") for a in sys.argv[1:]):  # leave --help, --cfg, -m to Hydra
        from lorarl.schema import ConfigError, check_overrides

        try:
            check_overrides(CONF, "evaluate", sys.argv[1:], _config)
        except ConfigError as e:
            sys.exit(f"error: {e}")
    main()
