"""How each distributed strategy treats the policy: sharding, gradient sync, clipping,
generation and gathering the trainable state for saving.

A PPO iteration runs many backward passes inside one Lightning ``training_step``: under manual
optimization Lightning's DDP re-arms the reducer before each one (``prepare_for_backward``),
FSDP2 reduce-scatters per backward by itself, and DeepSpeed's engine owns backward/step/clipping.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lorarl.models import decoder_layers


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters, found once per module (which ones train does not change)."""
    found = module.__dict__.get("_lorarl_trainable")
    if found is None:
        found = module.__dict__["_lorarl_trainable"] = [p for p in module.parameters() if p.requires_grad]
    return found


def max_over_ranks(n: int, device) -> int:
    """The largest ``n`` of all ranks (``n`` itself in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return n
    t = torch.tensor([float(n)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


class ShardingPlan:
    """Single process and DDP (replicated weights; Lightning's DDP syncs every manual backward)."""

    synced_generate = False
    can_merge = True  # whole weights on every rank: the adapter can be merged for generation

    def apply(self, policy: nn.Module, device_mesh=None) -> None:
        pass

    def clip_grad_norm(self, policy: nn.Module, max_norm: float | None) -> float | None:
        """Clip; the norm before clipping, or None where the strategy does not expose it."""
        params = [p for p in _trainable(policy) if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def generation_context(self, policy: nn.Module):
        return contextlib.nullcontext()

    def before_backward(self, module, last: bool) -> None:
        """Called before each micro-batch's backward; ``last``: the one before the optimizer step."""

    def backward_context(self, module, last: bool):
        """Around each micro-batch's backward. DDP: gradients are all-reduced once per optimizer
        step, in the last micro-batch's backward (the others accumulate locally): every rank runs
        as many micro-batches (``ppo.Batching``), so every rank's last is the same backward."""
        block = getattr(module.trainer.strategy, "block_backward_sync", None)
        return block() if block is not None and not last else contextlib.nullcontext()

    def trainable_state_dict(self, policy: nn.Module) -> dict[str, torch.Tensor]:
        """Full (unsharded) trainable tensors on CPU, keyed like ``policy.state_dict()``.
        A collective under sharded strategies: call it on every rank."""
        return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}


class FSDP2Plan(ShardingPlan):
    """FSDP2 (``fully_shard``) under Lightning's ModelParallelStrategy.

    Each decoder layer is its own unit; the LM and the value head are separate roots so that
    ``generate`` (registered as an FSDP forward method) never touches the critic.
    """

    synced_generate = True  # sharded weights: every rank runs every decoding step
    can_merge = False  # a merge needs whole weights; gathering them per rollout would undo the sharding

    def backward_context(self, module, last: bool):
        """FSDP2 reduce-scatters each backward's gradients into the sharded ones, which add up."""
        return contextlib.nullcontext()

    def __init__(self, activation_checkpointing: bool = False):
        self.activation_checkpointing = activation_checkpointing

    def apply(self, policy: nn.Module, device_mesh=None) -> None:
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = device_mesh["data_parallel"] if device_mesh is not None else None
        for layer in decoder_layers(policy.lm):
            fully_shard(layer, mesh=mesh)
        fully_shard(policy.lm, mesh=mesh)
        register_fsdp_forward_method(policy.lm, "generate")
        for extra in (policy.value_head, policy.reference):
            if extra is not None:
                fully_shard(extra, mesh=mesh)

    def trainable_state_dict(self, policy: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        return get_model_state_dict(policy, options=options)


class DeepSpeedPlan(ShardingPlan):
    """DeepSpeed ZeRO-2/3 under Lightning's DeepSpeedStrategy (CUDA only).

    The engine all-reduces/partitions gradients and clips them (``gradient_clipping`` in its
    config); every minibatch is one engine step. Its micro-batches accumulate gradients: ZeRO
    reduces them only in a backward marked as the accumulation boundary (the last), and without
    the mark keeps only the last backward's (``before_backward``).
    Under ZeRO-3 parameters are gathered around generation (token-by-token decoding would
    otherwise all-gather every layer for every token) and around saving.
    """

    def __init__(self, stage: int):
        self.stage = stage
        self.can_merge = stage < 3  # ZeRO-3 partitions the weights themselves

    def apply(self, policy: nn.Module, device_mesh=None) -> None:
        pass  # the engine partitions at setup

    def before_backward(self, module, last: bool) -> None:
        module.trainer.strategy.deepspeed_engine.set_gradient_accumulation_boundary(last)

    def clip_grad_norm(self, policy: nn.Module, max_norm: float | None) -> float | None:
        return None  # the engine clips inside its step (gradient_clipping in its config)

    def generation_context(self, policy: nn.Module):
        if self.stage < 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(policy.lm.parameters()), modifier_rank=None)

    def trainable_state_dict(self, policy: nn.Module) -> dict[str, torch.Tensor]:
        if self.stage < 3:
            return super().trainable_state_dict(policy)
        import deepspeed

        named = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            return {n: p.detach().cpu().clone() for n, p in named}
