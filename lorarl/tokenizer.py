"""Tokenizers: the built-in byte-level one (offline, no files) or a pretrained one."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML, the format Qwen models use, so the tiny model and real ones see the same framing.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens + 3 ChatML specials: any text round-trips, nothing is downloaded.

    A BPE model with no merges over the byte-level alphabet is exactly a byte tokenizer and
    saves/loads with ``save_pretrained``/``AutoTokenizer`` like any HF tokenizer.
    """
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in (PAD, BOS, EOS):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS, pad_token=PAD, additional_special_tokens=[BOS]
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the run's own text (env observations, transcripts): the env's
    fixed instructions become a few tokens instead of a thousand bytes, so a small model sees whole
    episodes. Every byte stays in the alphabet, so any text still round-trips. Same specials and
    chat template as the byte tokenizer; saved with the base model like any HF tokenizer."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD, additional_special_tokens=[BOS])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from lorarl.packaged import resolve

    tok = AutoTokenizer.from_pretrained(resolve(path), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        raise ValueError(f"tokenizer at {path} has no pad token; set one in its tokenizer_config.json")
    if tok.chat_template is None:
        raise ValueError(f"tokenizer at {path} has no chat template; multi-turn rollouts need one")
    return tok
