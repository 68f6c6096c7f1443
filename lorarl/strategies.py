"""Build the Lightning strategy and the matching ShardingPlan from a strategy name."""

from __future__ import annotations

import importlib.util

import torch

from lorarl.sharding import DeepSpeedPlan, FSDP2Plan, ShardingPlan
from lorarl.specs import STRATEGIES, StrategySpec


def deepspeed_config(stage: int, max_grad_norm: float | None, offload_optimizer: bool, precision: str) -> dict:
    """ZeRO config. Micro-batch = the PPO minibatch and no engine-side accumulation: lorarl
    steps once per minibatch, so DeepSpeed never drops gradients at an accumulation boundary
    (hand-made accumulation under ZeRO-2 keeps only the last backward's gradients). Clipping is the
    engine's (``gradient_clipping``); under ZeRO-3 lorarl gathers the adapter itself to save it."""
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # adapters are gathered by lorarl
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(max_grad_norm or 0.0),  # 0 disables clipping
        "bf16": {"enabled": precision.startswith("bf16")},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
    }


def build_strategy(spec: StrategySpec, max_grad_norm: float | None, world_size: int, precision: str = "32-true"):
    """Returns (strategy for ``L.Trainer``, ShardingPlan for the module)."""
    if spec.name not in STRATEGIES:
        raise ValueError(f"strategy.name={spec.name!r}: expected one of {', '.join(STRATEGIES)}")
    if spec.name == "auto":
        return "auto", ShardingPlan()
    if spec.name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend=spec.process_group_backend, timeout=_timeout(spec)), ShardingPlan()
    if spec.name == "fsdp":
        # FSDP2 via ModelParallelStrategy: it runs on CPU (gloo) too, unlike FSDPStrategy (FSDP1).
        from lightning.pytorch.strategies import ModelParallelStrategy

        # Pure data-parallel sharding: every process holds one shard ("auto" would mean one per node).
        strategy = ModelParallelStrategy(data_parallel_size=world_size, tensor_parallel_size=1,
                                         save_distributed_checkpoint=False,
                                         process_group_backend=spec.process_group_backend, timeout=_timeout(spec))
        return strategy, FSDP2Plan(spec.activation_checkpointing)
    if importlib.util.find_spec("deepspeed") is None:
        raise ValueError(f"strategy.name={spec.name}: DeepSpeed is not installed; install it with "
                         "`bash scripts/install.sh --deepspeed` (or pip install -e '.[deepspeed]')")
    if not torch.cuda.is_available():
        # Lightning's DeepSpeedStrategy refuses a CPU accelerator (DeepSpeed's own CPU accelerator
        # is not reachable through it), so there is no CPU or gloo fallback to offer here.
        raise ValueError(f"strategy.name={spec.name}: DeepSpeed needs CUDA GPUs; on CPU use ddp or fsdp")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    stage = int(spec.name[-1])
    config = deepspeed_config(stage, max_grad_norm, spec.offload_optimizer, precision)
    return DeepSpeedStrategy(config=config, timeout=_timeout(spec)), DeepSpeedPlan(stage)


def _timeout(spec: StrategySpec):
    from datetime import timedelta

    return timedelta(seconds=spec.collective_timeout_s)


LAUNCHER_VARIABLES = (("TORCHELASTIC_RUN_ID",), ("RANK", "WORLD_SIZE"), ("SLURM_NTASKS",), ("NODE_RANK", "MASTER_ADDR"))


def check_launcher(num_nodes: int, environ=None) -> None:
    """Several nodes need a launcher that starts this command on every node and tells each its
    rank (torchrun, srun; or NODE_RANK and MASTER_ADDR set by hand): without one, rank 0 would
    wait for nodes that never come."""
    import os

    env = os.environ if environ is None else environ
    if num_nodes > 1 and not any(all(v in env for v in names) for names in LAUNCHER_VARIABLES):
        raise ValueError(f"trainer.num_nodes={num_nodes}: no launcher started this process on each node; run it "
                         f"under torchrun (torchrun --nnodes {num_nodes} --nproc-per-node N --rdzv-backend c10d "
                         "--rdzv-endpoint HOST:PORT train.py ...) or SLURM (srun), or set NODE_RANK, MASTER_ADDR "
                         "and MASTER_PORT on every node")


def uses_gpu(accelerator: str) -> bool:
    """Whether trainer.accelerator puts the run on CUDA ("auto": where a GPU is available)."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and CUDAAccelerator.is_available())


def world_size(devices, num_nodes: int, accelerator: str) -> int:
    """Processes a Trainer with these settings will start, parsed by Lightning's own accelerators
    (raises ValueError, from Lightning, for devices it would refuse)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    acc = CUDAAccelerator if uses_gpu(accelerator) else CPUAccelerator
    try:
        parsed = acc.parse_devices(acc.auto_device_count() if devices == "auto" else devices)
    except (MisconfigurationException, TypeError) as e:
        raise ValueError(f"trainer.devices={devices!r}: {str(e).splitlines()[0]}") from None
    per_node = len(parsed) if isinstance(parsed, (list, tuple)) else int(parsed)
    if per_node < 1:
        raise ValueError(f"trainer.devices={devices!r}: no device selected")
    return per_node * num_nodes
