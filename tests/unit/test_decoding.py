"""lorarl.decoding: the lean per-token step gives what the model's own forward gives (tokens,
logprobs, lengths), on Qwen2 and Llama, with an unmerged adapter, with rows ending at different
steps; and it is used only where that holds."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from lorarl import decoding
from lorarl.lora import apply_lora
from lorarl.policy import Policy

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.2, tie_word_embeddings=False)


def _model(cls, config_cls, **extra):
    torch.manual_seed(0)
    return cls(config_cls(**SMALL, **extra)).eval()


def _batch(rows=(7, 3, 11, 5), seed=1):
    """Left-padded prompts of different lengths, as the collector makes them."""
    g = torch.Generator().manual_seed(seed)
    width = max(rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(rows):
        ids[i, width - n:] = torch.randint(3, 300, (n,), generator=g)
        mask[i, width - n:] = 1
    return ids, mask


def _recomputed(lm, ids, mask, tokens, temperature):
    """The training forward's logprobs of the decoded ``tokens`` after their prompts."""
    policy = Policy(lm, with_value_head=False, keep_reference=False).eval()
    full, full_mask = torch.cat([ids, tokens], 1), torch.cat([mask, torch.ones_like(tokens)], 1)
    return policy(full, full_mask, temperature).logprobs[:, ids.shape[1]:]


def _both(lm, ids, mask, n, temperature, eos, seed=0):
    """(lean, transformers' forward) decodes of the same batch from the same RNG state."""
    out = []
    for lean in (True, False):
        with torch.inference_mode():
            torch.manual_seed(seed)
            out.append(decoding.decode(lm, ids, mask, n, temperature, eos, 0, lean=lean))
    return out


@pytest.mark.parametrize("arch", [(Qwen2ForCausalLM, Qwen2Config), (LlamaForCausalLM, LlamaConfig)], ids=["qwen2", "llama"])
def test_lean_steps_give_the_model_forwards_tokens_and_logprobs(arch):
    lm = _model(*arch)
    ids, mask = _batch()
    assert decoding.lean_supported(lm)
    (lean, hf) = _both(lm, ids, mask, 12, None, -1)
    assert torch.equal(lean[0], hf[0])
    assert (lean[1] - hf[1]).abs().max() < 1e-5
    # rows end at different steps: take as eos a token that one row emits mid-way
    eos = int(hf[0][2, 4])
    (lean, hf) = _both(lm, ids, mask, 12, None, eos)
    assert torch.equal(lean[2], hf[2]) and int(lean[2][2]) <= 5 and int(lean[2].max()) > int(lean[2].min())
    assert torch.equal(lean[0], hf[0]) and (lean[1] - hf[1]).abs().max() < 1e-5
    # sampled at a temperature: the same draws, and each logprob is the training forward's
    (lean, hf) = _both(lm, ids, mask, 12, 0.7, -1, seed=3)
    assert torch.equal(lean[0], hf[0]) and (lean[1] - hf[1]).abs().max() < 1e-5
    assert (_recomputed(lm, ids, mask, lean[0], 0.7) - lean[1]).abs().max() < 1e-4


def test_a_shared_prompt_is_computed_once_and_each_row_samples_its_own_reply(monkeypatch):
    lm = _model(Qwen2ForCausalLM, Qwen2Config)
    ids, mask = _batch()
    order = torch.tensor([2, 0, 2, 2, 1, 0, 3, 1])  # GRPO groups, interleaved
    ids, mask = ids[order], mask[order]
    calls = []
    monkeypatch.setattr(decoding._LeanSteps, "_prefill", _spy(decoding._LeanSteps._prefill, calls))
    monkeypatch.setattr(decoding._LeanSteps, "next", _spy(decoding._LeanSteps.next, calls))
    (lean, hf) = _both(lm, ids, mask, 10, 1.0, -1)
    assert calls[0] == 4  # four distinct prompts in the first pass, then all eight rows a step
    assert all(rows == 8 for rows in calls[1:])
    assert torch.equal(lean[0], hf[0]) and (lean[1] - hf[1]).abs().max() < 1e-5
    assert not torch.equal(lean[0][0], lean[0][2])  # same prompt, own draws


def _spy(forward, calls):
    """``forward`` (a prefill of rows, or a step of tokens) recording how many rows it runs."""
    def spied(self, rows, *args):
        calls.append(len(rows))
        return forward(self, rows, *args)
    return spied


def test_lean_steps_run_an_unmerged_adapter(defaults):
    lm = apply_lora(_model(Qwen2ForCausalLM, Qwen2Config), defaults.model.lora)
    with torch.no_grad():  # B != 0: the adapter changes the output
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    ids, mask = _batch()
    assert decoding.lean_supported(lm.get_base_model())
    (lean, hf) = _both(lm, ids, mask, 10, 1.0, -1)
    assert torch.equal(lean[0], hf[0]) and (lean[1] - hf[1]).abs().max() < 1e-5
    with torch.inference_mode(), lm.disable_adapter():
        torch.manual_seed(0)
        base = decoding.decode(lm, ids, mask, 10, 1.0, -1, 0)
    assert not torch.allclose(base[1], lean[1])  # the adapter was in the loop


def test_lean_steps_only_where_they_compute_the_models_forward():
    assert not decoding.lean_supported(_model(Qwen2ForCausalLM, Qwen2Config).train())  # attention dropout
    sliding = _model(Qwen2ForCausalLM, Qwen2Config, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert not decoding.lean_supported(sliding)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4)).eval()
    assert not decoding.lean_supported(gpt2)

    class Custom(Qwen2ForCausalLM):  # remote code under a known name is not transformers' class
        pass

    Custom.__name__ = "Qwen2ForCausalLM"
    Custom.__module__ = "transformers_modules.someone.model"
    assert not decoding.lean_supported(Custom(Qwen2Config(**SMALL)).eval())


def test_other_architectures_decode_through_their_own_forward():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=64, n_layer=2, n_head=4)).eval()
    ids, mask = _batch()
    with torch.inference_mode():
        tokens, logprobs, lengths = decoding.decode(gpt2, ids, mask, 6, None, -1, 0)
    assert tokens.shape == (4, 6) and torch.equal(lengths, torch.full((4,), 6))
    assert (_recomputed(gpt2, ids, mask, tokens, 1.0) - logprobs).abs().max() < 1e-4


def test_algorithm_sampling_lean_steps_false_decodes_through_the_models_forward(tiny_lm, tiny_tokenizer, defaults,
                                                                                  monkeypatch):
    from dataclasses import replace

    tok = tiny_tokenizer
    policy = Policy(tiny_lm, with_value_head=False, keep_reference=False).eval()
    ids, mask = _batch()
    ids = ids.clamp(max=255)
    greedy = replace(defaults.algorithm.sampling, max_new_tokens=6, greedy=True)
    assert greedy.lean_steps  # on by default
    calls = []
    monkeypatch.setattr(decoding._LeanSteps, "extend", _spy(decoding._LeanSteps.extend, calls))
    lean = policy.generate(ids, mask, greedy, tok.eos_token_id, tok.pad_token_id)
    assert calls
    calls.clear()
    plain = policy.generate(ids, mask, replace(greedy, lean_steps=False), tok.eos_token_id, tok.pad_token_id)
    assert not calls
    assert torch.equal(lean.tokens, plain.tokens) and (lean.logprobs - plain.logprobs).abs().max() < 1e-5


@pytest.mark.parametrize("new_tokens", [1, 3])
def test_one_prompt_for_every_row_and_the_shortest_replies(new_tokens):
    lm = _model(LlamaForCausalLM, LlamaConfig)
    ids, mask = _batch(rows=(6,))
    ids, mask = ids.expand(5, -1), mask.expand(5, -1)
    (lean, hf) = _both(lm, ids, mask, new_tokens, 1.0, -1, seed=7)
    assert lean[0].shape == (5, new_tokens) and torch.equal(lean[2], torch.full((5,), new_tokens))
    assert torch.equal(lean[0], hf[0]) and (lean[1] - hf[1]).abs().max() < 1e-5


def test_sample_rows_draws_from_the_softmax_with_each_rows_own_stream():
    """Inverse CDF with a generator per row: frequencies match softmax(logp) (a multinomial's
    5-sigma band per token), a token of probability 0 never comes, and a row's draws depend on
    its seed only."""
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0, -1.0, -8.0], [0.0, 0.0, -float("inf"), 0.0, 0.0]]), -1)
    streams = [torch.Generator().manual_seed(s) for s in (11, 12)]
    draws = torch.cat([decoding.sample_rows(logp, streams) for _ in range(20_000)], 1)  # [2, n]
    for row in range(2):
        freq = torch.bincount(draws[row], minlength=5).double() / draws.shape[1]
        p = logp[row].exp().double()
        assert ((freq - p).abs() <= 5 * (p * (1 - p) / draws.shape[1]).sqrt() + 1e-12).all(), (freq, p)
    own = [torch.Generator().manual_seed(12)]
    alone = torch.cat([decoding.sample_rows(logp[1:], own) for _ in range(50)], 1)
    assert torch.equal(alone[0], draws[1, :50])


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "model-forward"])
def test_row_seeds_make_each_rows_reply_independent_of_its_batch(lean):
    """Sampled with ``row_seeds``, a row's tokens and logprobs are the same alone as in any batch,
    whatever the rows beside it and the global RNG; without, they are not."""
    lm = _model(LlamaForCausalLM, LlamaConfig)
    ids, mask = _batch((7, 3, 11, 5))
    seeds = [101, 102, 103, 104]
    with torch.inference_mode():
        torch.manual_seed(0)
        batch = decoding.decode(lm, ids, mask, 10, 1.0, -1, 0, lean=lean, row_seeds=seeds)
        torch.manual_seed(1)  # another global state: no effect
        order = [2, 0, 3, 1]
        shuffled = decoding.decode(lm, ids[order], mask[order], 10, 1.0, -1, 0, lean=lean,
                                   row_seeds=[seeds[i] for i in order])
        for j, i in enumerate(order):
            assert torch.equal(shuffled[0][j], batch[0][i]) and (shuffled[1][j] - batch[1][i]).abs().max() < 1e-5
        # row 2 alone (its own width of left padding gone)
        alone = decoding.decode(lm, ids[2:3, -11:], mask[2:3, -11:], 10, 1.0, -1, 0, lean=lean, row_seeds=[103])
        assert torch.equal(alone[0][0], batch[0][2])
        other_seed = decoding.decode(lm, ids[2:3, -11:], mask[2:3, -11:], 10, 1.0, -1, 0, lean=lean, row_seeds=[7])
        assert not torch.equal(other_seed[0][0], batch[0][2])
    # the recorded logprobs are the policy's own at the sampled tokens, as with the shared stream
    assert (_recomputed(lm, ids, mask, batch[0], 1.0) - batch[1]).abs().max() < 1e-4
