"""The rollout fast path: merged-adapter sampling, KV-cache options, activation checkpointing,
and the DeepSpeed config, each against the plain path."""

from dataclasses import replace

import pytest
import torch

from lorarl.lora import apply_lora, merged_for_inference
from lorarl.policy import Policy
from lorarl.strategies import deepspeed_config


@pytest.fixture
def policy(tiny_lm, defaults):
    lm = apply_lora(tiny_lm, defaults.model.lora)
    with torch.no_grad():  # a trained-looking adapter: B != 0, so merging changes the weights
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    return Policy(lm, with_value_head=False, keep_reference=False).eval()


def _prompt(tok):
    rows = [tok("<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n")["input_ids"],
            tok("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")["input_ids"]]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    return ids, (ids != tok.pad_token_id).long()


def _generate(policy, tok, sampling):
    ids, mask = _prompt(tok)
    return policy.generate(ids, mask, sampling, tok.eos_token_id, tok.pad_token_id)


def test_merged_sampling_matches_the_training_forward_and_leaves_the_base_intact(policy, tiny_tokenizer, defaults):
    tok = tiny_tokenizer
    sampling = replace(defaults.algorithm.sampling, max_new_tokens=12)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    torch.manual_seed(0)
    with merged_for_inference(policy.lm):
        gen = _generate(policy, tok, sampling)
    ids, mask = _prompt(tok)
    full = torch.cat([ids, gen.tokens], 1)
    full_mask = torch.cat([mask, torch.ones_like(gen.tokens)], 1)
    recomputed = policy(full, full_mask, sampling.temperature).logprobs[:, ids.shape[1]:]  # unmerged
    valid = torch.arange(gen.tokens.shape[1])[None] < gen.lengths[:, None]
    assert ((recomputed - gen.logprobs).abs() * valid).max() < 1e-4  # fp32: the same policy, to rounding
    assert all(torch.equal(before[n], p) for n, p in policy.named_parameters())  # bit-for-bit after unmerge
    greedy = replace(sampling, greedy=True)
    with merged_for_inference(policy.lm):
        merged = _generate(policy, tok, greedy)
    assert torch.equal(merged.tokens, _generate(policy, tok, greedy).tokens)


def test_static_cache_gives_the_same_greedy_output(policy, tiny_tokenizer, defaults):
    greedy = replace(defaults.algorithm.sampling, max_new_tokens=10, greedy=True)
    dynamic = _generate(policy, tiny_tokenizer, greedy)
    static = _generate(policy, tiny_tokenizer, replace(greedy, cache="static"))
    assert torch.equal(dynamic.tokens, static.tokens) and torch.allclose(dynamic.logprobs, static.logprobs, atol=1e-4)


@pytest.mark.slow
def test_compiled_static_decoding_gives_the_same_greedy_output(policy, tiny_tokenizer, defaults):
    greedy = replace(defaults.algorithm.sampling, max_new_tokens=10, greedy=True)
    compiled = _generate(policy, tiny_tokenizer, replace(greedy, cache="static", compile=True))
    assert torch.equal(_generate(policy, tiny_tokenizer, greedy).tokens, compiled.tokens)


def test_activation_checkpointing_recomputes_in_training_and_is_off_in_generation(tiny_lm, tiny_tokenizer, defaults):
    from lorarl.models import decoder_layers

    tiny_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False)
    calls = []
    # transformers checkpoints a layer's forward (not its __call__): count a submodule's calls (the
    # query projection, which decoding's lean steps call too). Pre-hook: the recomputation stops as
    # soon as it has what backward needs.
    decoder_layers(policy.lm)[0].self_attn.q_proj.register_forward_pre_hook(lambda *_: calls.append(1))
    ids, mask = _prompt(tiny_tokenizer)
    policy.train()
    policy(ids, mask).logprobs.sum().backward()
    assert len(calls) == 2  # forward, and again in backward: activations were not kept
    calls.clear()
    policy.eval()
    gen = _generate(policy, tiny_tokenizer, replace(defaults.algorithm.sampling, max_new_tokens=5, greedy=True))
    assert len(calls) == gen.tokens.shape[1]  # one call per token: the KV cache works, nothing recomputed


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config(stage):
    cfg = deepspeed_config(stage, max_grad_norm=1.0, offload_optimizer=False, precision="bf16-true")
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["gradient_clipping"] == 1.0 and cfg["bf16"] == {"enabled": True}
    # one engine step per PPO minibatch: no engine accumulation, so no gradients dropped at a boundary
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["train_micro_batch_size_per_gpu"] == 1
    # under ZeRO-3 lorarl gathers only the trainable adapter to save it, not 16-bit copies of everything
    assert cfg["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", False) is False
    off = deepspeed_config(stage, max_grad_norm=None, offload_optimizer=True, precision="32-true")
    assert off["gradient_clipping"] == 0.0 and off["bf16"] == {"enabled": False}
    assert off["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def _full_logits_reference(policy, ids, mask, temperature):
    """The plain computation: logits at every position, then log p, entropy and values."""
    from lorarl.ops import position_ids_from_mask, shift_to_tokens, token_entropy, token_logprobs

    out = policy.lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                    output_hidden_states=True, use_cache=False)
    values = shift_to_tokens(policy.value_head(out.hidden_states[-1][:, :-1]).squeeze(-1))
    return token_logprobs(out.logits, ids, temperature), token_entropy(out.logits, temperature), values


@pytest.mark.parametrize("chunk_elements,keep", [(1 << 26, 1 << 22), (3 * 512, 0)])  # one chunk kept; 3 positions, recomputed
def test_logits_only_at_action_positions_match_full_logits(tiny_lm, tiny_tokenizer, defaults, monkeypatch,
                                                           chunk_elements, keep):
    import lorarl.policy as P

    monkeypatch.setattr(P, "CHUNK_ELEMENTS", chunk_elements)
    monkeypatch.setattr(P, "KEEP_ELEMENTS", keep)
    torch.manual_seed(0)
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=True, keep_reference=False)
    with torch.no_grad():
        policy.value_head.weight.normal_()
    ids, mask = _prompt(tiny_tokenizer)
    actions = torch.zeros_like(mask, dtype=torch.bool)
    actions[:, -6:-2] = True
    actions[0, 3] = True
    ref_lp, ref_ent, ref_v = _full_logits_reference(policy, ids, mask, 0.7)
    (ref_lp * actions).sum().add((ref_ent * actions).sum()).add((ref_v * actions).sum()).backward()
    ref_grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad()
    out = policy(ids, mask, 0.7, with_values=True, positions=actions)
    (out.logprobs.sum() + out.entropy.sum() + out.values.sum()).backward()
    for got, want in ((out.logprobs, ref_lp), (out.entropy, ref_ent), (out.values, ref_v)):
        assert torch.allclose(got, want * actions, atol=1e-5) and not got[~actions].any()
    for n, p in policy.named_parameters():
        if n in ref_grads:
            # fp32 sums in another order: an error relative to the tensor's scale (|grad| up to ~30
            # here; 1.2e-5 apart on an AMD EPYC with MKL), not an absolute 1e-5
            scale = ref_grads[n].abs().max().item()
            assert torch.allclose(p.grad, ref_grads[n], atol=1e-5 * max(1.0, scale / 10)), (
                n, (p.grad - ref_grads[n]).abs().max().item(), scale)
    assert "lm_head" not in str([n for n, _ in policy.named_modules() if "TokenHead" in type(_).__name__])


def test_a_model_that_post_processes_logits_falls_back_to_full_logits(tiny_lm, tiny_tokenizer, defaults):
    policy = Policy(apply_lora(tiny_lm, defaults.model.lora), with_value_head=False, keep_reference=False)
    base = policy.lm.get_base_model()
    plain = base.forward

    def capped(*args, **kwargs):  # soft-capping, as Gemma 2 does after the head
        out = plain(*args, **kwargs)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out

    ids, mask = _prompt(tiny_tokenizer)
    base.forward = capped
    got = policy(ids, mask).logprobs
    from lorarl.ops import position_ids_from_mask, token_logprobs

    want = token_logprobs(policy.lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                                    use_cache=False).logits, ids)
    assert torch.allclose(got, want * mask.bool().logical_and(torch.arange(ids.shape[1]) > 0), atol=1e-6)


def test_sampling_draws_from_the_full_distribution(policy, tiny_tokenizer, defaults):
    """No top-k or top-p: a library default (transformers' top_k=50) would truncate what is sampled
    while the recorded logprobs are the full distribution's, and PPO's ratio would be wrong."""
    from lorarl.ops import position_ids_from_mask

    sampling = replace(defaults.algorithm.sampling, max_new_tokens=1)
    ids, mask = _prompt(tiny_tokenizer)
    ids, mask = ids[:1].repeat(256, 1), mask[:1].repeat(256, 1)
    torch.manual_seed(0)
    gen = policy.generate(ids, mask, sampling, tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logits = policy.lm(input_ids=ids[:1], attention_mask=mask[:1], position_ids=position_ids_from_mask(mask[:1])).logits[0, -1]
    rank = {int(t): r for r, t in enumerate(logits.argsort(descending=True))}
    ranks = [rank[int(t)] for t in gen.tokens[:, 0]]
    assert sum(r >= 50 for r in ranks) > 16, sorted(ranks)[-10:]  # top-50 sampling would give none


def test_own_decoding_loop_stops_rows_at_eos_like_transformers(policy, tiny_tokenizer, defaults):
    """Rows end at different steps: the ended row continues with pad and its length counts the
    eos; the other rows decode as if alone. Checked against transformers' generate (static path)."""
    tok = tiny_tokenizer
    greedy = replace(defaults.algorithm.sampling, max_new_tokens=8, greedy=True)
    ids, mask = _prompt(tok)
    first = policy.generate(ids, mask, greedy, tok.eos_token_id, tok.pad_token_id)
    eos = int(first.tokens[0, 2])  # row 0's third token plays eos: it stops there
    ours = policy.generate(ids, mask, greedy, eos, tok.pad_token_id)
    theirs = policy.generate(ids, mask, replace(greedy, cache="static"), eos, tok.pad_token_id)
    n = int(ours.lengths[0])
    assert n <= 3 and int(ours.tokens[0, n - 1]) == eos and (ours.tokens[0, n:] == tok.pad_token_id).all()
    assert torch.equal(ours.lengths, theirs.lengths)
    width = min(ours.tokens.shape[1], theirs.tokens.shape[1])
    valid = torch.arange(width)[None] < ours.lengths[:, None]
    assert torch.equal(ours.tokens[:, :width] * valid, theirs.tokens[:, :width] * valid)
    assert ((ours.logprobs[:, :width] - theirs.logprobs[:, :width]).abs() * valid).max() < 1e-4
