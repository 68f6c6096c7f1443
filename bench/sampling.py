"""Sampling each row from its own random stream (``decoding.sample_rows``, what evaluation uses so
that an episode's samples do not depend on its batch) against one stream for the batch
(``torch.multinomial``): seconds per sampled decode of the packaged SmolLM2-135M-Instruct, and
the sampler alone on its vocabulary.

    python bench/sampling.py                       # batch 16, 64 new tokens, 5 rounds, 2 threads
    python bench/sampling.py --batch 64 --threads 1

One process; arms interleaved (A, B, A, B) for ``--rounds`` rounds, the thread count pinned and
printed; min and median per arm and the ratio of each. Prompts are random token ids of a fixed
length and no token ends a row (eos -1): every decode runs ``--new-tokens`` steps, so the arms do
the same model work and differ only in how a token is drawn.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.common import interleaved, pin_threads, record, spread, table  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=400)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    threads = pin_threads(args.threads)
    import torch

    from lorarl.decoding import decode, sample_rows
    from lorarl.models import load_pretrained_model

    lm = load_pretrained_model(args.model).eval()
    vocab = lm.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab, (args.batch, args.prompt_tokens), generator=g)
    mask = torch.ones_like(ids)
    seeds = list(range(args.batch))

    def decode_once(row_seeds):
        def run() -> float:
            with torch.inference_mode():
                start = time.perf_counter()
                decode(lm, ids, mask, args.new_tokens, 0.5, -1, 0, row_seeds=row_seeds)
                return time.perf_counter() - start
        return run

    logp = torch.log_softmax(torch.randn(args.batch, vocab, generator=g) * 3, -1)
    streams = [torch.Generator().manual_seed(s) for s in seeds]

    def sampler(own: bool):
        def run() -> float:
            start = time.perf_counter()
            for _ in range(50):
                sample_rows(logp, streams) if own else torch.multinomial(logp.exp(), 1)
            return (time.perf_counter() - start) / 50
        return run

    print(f"torch threads: {threads}; batch {args.batch}, prompt {args.prompt_tokens} tokens, {args.new_tokens} new, "
          f"vocabulary {vocab}, {args.rounds} rounds interleaved", flush=True)
    show = lambda name, r, v: print(f"  round {r}: {name}: {v:.4f} s", flush=True)  # noqa: E731
    whole = interleaved({"one stream (multinomial)": decode_once(None), "a stream per row": decode_once(seeds)},
                        args.rounds, show)
    alone = interleaved({"one stream (multinomial)": sampler(False), "a stream per row": sampler(True)}, args.rounds)
    rows = []
    for what, got, unit in (("sampled decode, s", whole, 1.0), ("sampler alone, ms per step", alone, 1e3)):
        base = got["one stream (multinomial)"]
        for name, values in got.items():
            s = spread([v * unit for v in values], 3)
            rows.append({"measure": what, "arm": name, "min": s["min"], "median": s["median"],
                         "ratio to one stream (min)": round(min(values) / min(base), 3),
                         "ratio (median)": round(sorted(values)[len(values) // 2] / sorted(base)[len(base) // 2], 3)})
    print(table(rows, f"sampling: one stream per batch vs a stream per row ({threads} threads)"))
    record("sampling", {"args": vars(args), "threads": threads, "rows": rows})


if __name__ == "__main__":
    main()
