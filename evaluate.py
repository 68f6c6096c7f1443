"""Evaluate saved adapters (dynamic or merged), against the base model, per task type.

    python evaluate.py adapter=runs/<run>/checkpoints/iter_000010 num_samples=100
    python evaluate.py adapter=DIR compare=[none,OTHER_DIR] model_path=runs/<run>/base_model
    python evaluate.py adapter=DIR mode=both merged_path=merged/ use_merged=true

Wiring only: compose and validate the config, run lorarl.eval_run.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parent / "conf")


def _fail(e: Exception) -> None:
    sys.exit(f"error: {e}")


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from lorarl.evaluation import EvalError
    from lorarl.schema import ConfigError, EvalConfig, load, validate_eval

    try:
        config = load(cfg, EvalConfig, validate_eval)
        import envs  # noqa: F401  registers the env ids that configs name

        from lorarl.eval_run import run_evaluation

        run_evaluation(config)
    except (ConfigError, EvalError) as e:
        _fail(e)


if __name__ == "__main__":
    if not any(a.startswith("-") for a in sys.argv[1:]):
        from lorarl.schema import ConfigError, EvalConfig, check_overrides, validate_eval

        try:
            check_overrides(CONF, "evaluate", sys.argv[1:], EvalConfig, validate_eval)
        except ConfigError as e:
            _fail(e)
    main()
