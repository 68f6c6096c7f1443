"""The lean decoder's prefix cache (lorarl.prefix_cache): reusing an episode's earlier turns and a
prefix shared by a batch's rows gives the tokens and logprobs of computing everything again (Qwen2
and Llama, LoRA and full fine-tuning, left padding, rows ending at different turns, a prompt
shorter than the others' shared prefix), never outlives a weight update, and stays in its budget.
Greedy decoding with drafts from the context (prompt lookup) gives the same tokens too, the
rejected drafts' columns left out of what the cache keeps."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from lorarl.decoding import decode
from lorarl.lora import apply_lora
from lorarl.prefix_cache import PrefixCache
from lorarl.specs import LoraSpec

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.2, tie_word_embeddings=False)
EOS, PAD = 2, 0


def _lm(arch: str, lora: bool):
    cls, cfg = {"qwen2": (Qwen2ForCausalLM, Qwen2Config), "llama": (LlamaForCausalLM, LlamaConfig)}[arch]
    torch.manual_seed(0)
    lm = cls(cfg(**SMALL)).eval()
    if lora:
        lm = apply_lora(lm, LoraSpec(True, 4, 8.0, 0.0, "all-linear", [], "default", None)).eval()
        with torch.no_grad():
            for n, p in lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    return lm


def _left_pad(rows):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask


def _decode(lm, rows, cache=None, keys=None, new=6, temperature=None, seed=0, lookup=0, eos=EOS):
    ids, mask = _left_pad(rows)
    torch.manual_seed(seed)
    with torch.inference_mode():
        tokens, logp, lengths = decode(lm, ids, mask, new, temperature, eos, PAD, True, cache, keys, lookup)
    return [(tokens[i, :n].tolist(), logp[i, :n]) for i, n in enumerate(lengths.tolist())]


def _turns(lm, cache, temperature=None, lookup=0, new=6):
    """Three turns of five episodes: a shared 40-token instruction prefix, two rows of one task (a
    GRPO group), one prompt shorter than the shared prefix; episode 1 ends after turn 1, episode 3
    after turn 2. Returns every turn's (tokens, logprobs) per episode, and the rows played."""
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(3, 300, (n,), generator=g).tolist()  # noqa: E731
    instructions, task = rand(40), rand(7)
    rows = {0: instructions + task, 1: instructions + rand(12), 2: instructions + task, 3: instructions[:25],
            4: instructions + rand(3)}
    for turn, live in enumerate([[0, 1, 2, 3, 4], [0, 2, 3, 4], [0, 2, 4]]):
        batch = [rows[e] for e in live]
        out = _decode(lm, batch, cache, live if cache is not None else None, new, temperature, turn, lookup)
        for e, (toks, _) in zip(live, out):
            rows[e] = rows[e] + toks + ([EOS] if not toks or toks[-1] != EOS else []) + rand(5)  # observation
        yield out, batch


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("lora", [True, False])
@pytest.mark.parametrize("temperature", [None, 0.8])
def test_reused_prefixes_give_the_tokens_and_logprobs_of_a_full_prefill(arch, lora, temperature):
    lm = _lm(arch, lora)
    cache = PrefixCache(1 << 30, min_shared=16)
    for (cached, _), (plain, _) in zip(_turns(lm, cache, temperature), _turns(lm, None, temperature)):
        for (toks_c, lp_c), (toks_p, lp_p) in zip(cached, plain):
            assert toks_c == toks_p
            assert torch.allclose(lp_c, lp_p, atol=1e-4)
    stats = cache.stats()
    assert stats["prefill_tokens_reused"] > 2 * stats["prefill_tokens_computed"]  # most of the prompts came from the cache


def test_a_prefill_runs_only_the_new_tokens_of_each_row_unpadded(monkeypatch):
    """Rows of one turn bring very different numbers of new tokens (a fresh task's prompt beside a
    short observation): the prefill runs their sum, packed, not rows x the longest."""
    import lorarl.decoding as decoding

    ran = {"all": 0, "steps": 0, "padded": 0}
    layers, step, prefill = decoding._LeanSteps._layers, decoding._LeanSteps.next, decoding._LeanSteps._prefill

    def counted_layers(self, ids, *args):
        ran["all"] += ids.numel()
        return layers(self, ids, *args)

    def counted_step(self, tokens, *args):
        ran["steps"] += tokens.numel()
        return step(self, tokens, *args)

    def counted_prefill(self, rows, sources, *args):
        ran["padded"] += len(rows) * max(len(r) - c for r, (_, c) in zip(rows, sources))
        return prefill(self, rows, sources, *args)

    monkeypatch.setattr(decoding._LeanSteps, "_layers", counted_layers)
    monkeypatch.setattr(decoding._LeanSteps, "next", counted_step)
    monkeypatch.setattr(decoding._LeanSteps, "_prefill", counted_prefill)
    cache = PrefixCache(1 << 30, min_shared=16)
    for _ in _turns(_lm("llama", True), cache):
        pass
    computed = cache.stats()["prefill_tokens_computed"]
    assert ran["all"] - ran["steps"] == computed  # the prefills ran exactly the tokens no cache held
    assert ran["padded"] > 1.2 * computed  # padding each prefill to its longest row: 185 against 144


def test_a_shared_prefix_is_computed_once_and_reused_by_later_batches():
    lm = _lm("qwen2", True)
    cache = PrefixCache(1 << 30, min_shared=16)
    g = torch.Generator().manual_seed(3)
    instructions = torch.randint(3, 300, (60,), generator=g).tolist()
    batch = lambda: [instructions + torch.randint(3, 300, (5,), generator=g).tolist() for _ in range(4)]  # noqa: E731
    _decode(lm, batch(), cache, ["a", "b", "c", "d"])
    first = cache.stats()["prefill_tokens_computed"]
    assert first <= 60 + 4 * 5 + 4  # the instructions once, each row's own tokens
    for key in "abcd":  # the batch's episodes end; the shared prefix stays
        cache.end_episode(key)
    rows = batch()
    got = _decode(lm, rows, cache, ["e", "f", "g", "h"])
    assert cache.stats()["prefill_tokens_computed"] - first <= 4 * 5 + 4
    assert [t for t, _ in got] == [t for t, _ in _decode(lm, rows)]


def test_nothing_is_reused_after_a_weight_update():
    lm = _lm("llama", True)
    cache = PrefixCache(1 << 30, min_shared=16)
    turns = _turns(lm, cache)
    next(turns)
    with torch.no_grad():  # an optimizer step: in place, as AdamW updates the adapter
        for n, p in lm.named_parameters():
            if "lora_A" in n:
                p.add_(0.05)
    reused = cache.stats()["prefill_tokens_reused"]
    second, rows = next(turns)
    # the first turn's entries are gone: only the instructions the rows still share are reused,
    # computed again with the new weights (25 tokens: row 3's prompt is a prefix of the rest's)
    assert cache.stats()["prefill_tokens_reused"] - reused <= 25 * 4
    for (toks, lp), (toks_p, lp_p) in zip(second, _decode(lm, rows, seed=1)):  # a stale entry would be off by ~0.05
        assert toks == toks_p and torch.allclose(lp, lp_p, atol=1e-4)


def test_nothing_is_reused_after_a_weight_update_between_merged_decodes():
    """Rollouts decode with the adapter merged into copies of the weights (``merged_for_inference``):
    after an update the next merge makes new copies, which the allocator may place where the last
    ones were (the cache holds the storages it compares against, so they cannot). A cache kept
    across the two still recomputes everything."""
    from lorarl.lora import merged_for_inference

    lm = _lm("llama", True)
    cache = PrefixCache(1 << 30, min_shared=16)
    turns = _turns(lm, cache)
    with merged_for_inference(lm):
        next(turns)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_A" in n:
                p.add_(0.05)
    with merged_for_inference(lm):
        second, rows = next(turns)
        fresh = _decode(lm, rows, seed=1)
    for (toks, lp), (toks_p, lp_p) in zip(second, fresh):
        assert toks == toks_p and torch.allclose(lp, lp_p, atol=1e-4)


def test_the_cache_stays_within_its_budget_and_stays_exact():
    lm = _lm("qwen2", False)
    cache = PrefixCache(20_000, min_shared=16)  # a few rows' worth
    for (cached, _), (plain, _) in zip(_turns(lm, cache), _turns(lm, None)):
        assert [t for t, _ in cached] == [t for t, _ in plain]
        assert cache.nbytes() <= 20_000


@pytest.mark.parametrize("temperature", [None, 0.8])
def test_the_bench_before_arm_padded_prefill_decodes_the_same(temperature):
    """bench/prefix_cache.py's "before" arm restores the prefill that padded rows to the longest:
    it must decode what today's packed prefill decodes, or the bench's ratio compares two things."""
    import lorarl.decoding as decoding
    from bench.prefix_cache import _padded_prefill, padded_prefills

    lm = _lm("qwen2", True)
    runs = []
    try:
        for padded in (False, True):
            padded_prefills(padded)
            assert (decoding._LeanSteps._prefill is _padded_prefill) == padded
            runs.append(list(_turns(lm, None, temperature)))
    finally:
        padded_prefills(False)
    for (packed, _), (padded, _) in zip(*runs):
        for (toks_a, lp_a), (toks_b, lp_b) in zip(packed, padded):
            assert toks_a == toks_b
            assert torch.allclose(lp_a, lp_b, atol=1e-4)


class _Oracle:
    """Drafts that are the model's own greedy reply (recorded from a plain decode of the same
    rows), wrong from their third token on every other call: prompt lookup's drafts are right
    and wrong in runs, and a random tiny model never repeats its context."""

    def __init__(self, monkeypatch):
        import lorarl.decoding as decoding

        self.replies, self.calls, self.kept = {}, 0, []
        oracle = self

        def drafted(drafts, k):
            reply = next((r for prompt, r in oracle.replies.items() if drafts.seq[: len(prompt)] == list(prompt)), [])
            done = len(drafts.seq) - next(len(p) for p in oracle.replies if drafts.seq[: len(p)] == list(p))
            guess = list(reply[done: done + k])
            oracle.calls += 1
            if oracle.calls % 2 and len(guess) > 2:
                guess[2] = (guess[2] + 1) % 300
            return guess

        accept = decoding._LeanSteps.accept
        monkeypatch.setattr(decoding._Drafts, "next", drafted)
        monkeypatch.setattr(decoding._LeanSteps, "accept", lambda steps, kept: (self.kept.append(kept), accept(steps, kept)))

    def learn(self, rows, replies):
        self.replies.update({tuple(r): toks for r, (toks, _) in zip(rows, replies)})


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_greedy_with_drafts_gives_the_tokens_of_one_at_a_time(arch, monkeypatch):
    lm = _lm(arch, True)
    g = torch.Generator().manual_seed(5)
    rows = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (9, 30, 17, 4)]
    plain = _decode(lm, rows, new=24)
    eos = plain[1][0][7]  # a token row 1 emits mid-way: its reply ends inside an accepted draft
    plain = _decode(lm, rows, new=24, eos=eos)
    oracle = _Oracle(monkeypatch)
    oracle.learn(rows, plain)
    got = _decode(lm, rows, new=24, lookup=4, eos=eos)
    for (toks_l, lp_l), (toks_p, lp_p) in zip(got, plain):
        assert toks_l == toks_p
        assert torch.allclose(lp_l, lp_p, atol=1e-4)
    assert len(got[1][0]) <= 8 and len(got[0][0]) == 24  # one row stopped at eos, another at the limit
    assert len(oracle.kept) < 24 // 2  # passes: the drafts were taken, in parts


def test_drafts_leave_no_holes_in_what_the_next_turn_reuses(monkeypatch):
    lm = _lm("llama", True)
    plain = list(_turns(lm, None, new=12))
    oracle = _Oracle(monkeypatch)
    for out, batch in plain:
        oracle.learn(batch, out)
    cache = PrefixCache(1 << 30, min_shared=16)
    for (looked, _), (one_by_one, _) in zip(_turns(lm, cache, lookup=3, new=12), plain):
        for (toks_l, lp_l), (toks_p, lp_p) in zip(looked, one_by_one):
            assert toks_l == toks_p
            assert torch.allclose(lp_l, lp_p, atol=1e-4)
    assert any(max(k) > 1 for k in oracle.kept) and any(0 < min(k) < max(k) for k in oracle.kept if max(k) > 1)
    assert cache.stats()["prefill_tokens_reused"] > 2 * cache.stats()["prefill_tokens_computed"]


def test_drafts_are_what_followed_the_last_tokens_latest_earlier_occurrence():
    from lorarl.decoding import _Drafts

    d = _Drafts([5, 6, 7, 8, 9, 5, 6, 1, 2, 5, 6])
    assert d.next(3) == [1, 2, 5]  # "5 6" last occurred before "1 2 5"
    d.add([1])
    assert d.next(4) == [2, 5, 6, 1]  # "5 6 1" before: what followed it, up to the last token
    d.add([7])
    assert d.next(2) == [8, 9]  # no "6 1 7" nor "1 7" before: "7" alone
    assert _Drafts([1, 2, 3]).next(2) == []
