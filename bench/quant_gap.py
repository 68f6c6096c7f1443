"""What the packaged base's quantization means for an adapter: an estimate, not a measurement.

lorarl's local SmolLM2-135M-Instruct is the pip package's Q4_1 GGUF dequantized (its embedding is
Q8_0), not the hub's bf16 weights, which cannot be downloaded here. An adapter trained on it is
saved naming the hub id, so elsewhere it runs on the hub's weights. Those lie somewhere in each
weight's quantization cell: Q4_1 stores a block of 32 weights as ``min + d * q`` (q = 0..15,
rounded to nearest), so the original is within ``d / 2`` of the dequantized value; Q8_0 as
``d * q`` (d = absmax / 127). This bench draws stand-ins for the hub's weights uniformly in those
cells (each block's ``d`` recovered from its own dequantized values) and measures, teacher-forced
on held-out oracle transcripts and with the adapter on, how far the replies' token logprobs and
argmax tokens move, next to how far the adapter itself moved them from the base.

    python bench/quant_gap.py --adapter runs/sft_db_s0/checkpoints/iter_000001 --env db_bench
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.common import pin_threads, record, table  # noqa: E402

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
HELD_OUT_SEED = 900_000_000  # transcripts of tasks no SFT run here trained on


def cell_noise(weight, block: int, levels: int, generator):
    """Uniform noise within each weight's quantization cell, for a [out, in] weight quantized in
    blocks of ``block`` along ``in``: Q4_1 (``levels`` 15: d = (max - min) / 15), Q8_0 (``levels``
    0: d = absmax / 127). A block's extreme weights are stored exactly (Q4_1) and get none."""
    import torch

    w = weight.reshape(weight.shape[0], -1, block)
    if levels:
        hi, lo = w.amax(-1, keepdim=True), w.amin(-1, keepdim=True)
        d = (hi - lo) / levels
        exact = (w == hi) | (w == lo)
    else:
        d = w.abs().amax(-1, keepdim=True) / 127
        exact = torch.zeros_like(w, dtype=torch.bool)
    noise = (torch.rand(w.shape, generator=generator) - 0.5) * d
    return noise.masked_fill(exact, 0.0).reshape(weight.shape)


def reply_logprobs(model, episodes):
    """Per episode: (log p of each reply token, argmax at each reply token), teacher-forced."""
    import torch

    out = []
    with torch.no_grad():
        for ids, mask in episodes:
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1)
            at = torch.tensor(mask[1:])
            target = x[0, 1:][at]
            out.append((logp[at].gather(-1, target[:, None])[:, 0], logp[at].argmax(-1)))
    return out


def gap(a, b) -> dict:
    import torch

    lp_a, lp_b = torch.cat([x for x, _ in a]), torch.cat([x for x, _ in b])
    am_a, am_b = torch.cat([y for _, y in a]), torch.cat([y for _, y in b])
    seq = [float((x - y).sum().abs()) for (x, _), (y, _) in zip(a, b)]
    return {"mean |dlogp| per token": round(float((lp_a - lp_b).abs().mean()), 4),
            "max |dlogp|": round(float((lp_a - lp_b).abs().max()), 3),
            "argmax agreement": round(float((am_a == am_b).float().mean()), 4),
            "|d log p(reply)| median": round(statistics.median(seq), 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True)
    p.add_argument("--env", default="db_bench")
    p.add_argument("--transcripts", type=int, default=16)
    p.add_argument("--draws", type=int, default=3, help="stand-ins for the hub's weights")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    threads = pin_threads(args.threads)
    import torch
    from peft import PeftModel

    from lorarl.models import load_pretrained_model
    from lorarl.rollout import ChatFramer
    from lorarl.sft import encode
    from lorarl.tokenizer import load_tokenizer
    from lorarl.packaged import resolve

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "t.jsonl"
        subprocess.run([sys.executable, "scripts/make_transcripts.py", "--env", args.env, "--episodes",
                        str(args.transcripts), "--seed", str(HELD_OUT_SEED), "--out", str(data)], cwd=ROOT, check=True,
                       capture_output=True)
        rows = [json.loads(line) for line in data.read_text().splitlines()]
    framer = ChatFramer(load_tokenizer(resolve(MODEL)))
    episodes = [encode(r["messages"], r["prompt_turns"], framer, 4096) for r in rows]
    model = PeftModel.from_pretrained(load_pretrained_model(MODEL, torch.float32), args.adapter).eval()
    with model.disable_adapter():
        base = reply_logprobs(model, episodes)
    ours = reply_logprobs(model, episodes)
    results = [{"compared": "adapter on vs off (what training changed)", **gap(ours, base)}]
    originals = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n and p.dim() == 2}
    for draw in range(args.draws):
        g = torch.Generator().manual_seed(draw)
        with torch.no_grad():
            for name, w in model.named_parameters():
                if name in originals:
                    embedding = "embed_tokens" in name
                    w.copy_(originals[name] + cell_noise(originals[name], 32, 0 if embedding else 15, g))
        results.append({"compared": f"adapter on Q4_1 base vs on a stand-in hub base (draw {draw})",
                        **gap(ours, reply_logprobs(model, episodes))})
    tokens = sum(sum(m) for _, m in episodes)
    print(table(results, f"{args.env}: {len(episodes)} held-out oracle transcripts, {tokens} reply tokens, "
                         f"adapter {args.adapter}, {threads} threads"))
    record("quant_gap", {"args": vars(args), "reply_tokens": tokens, "rows": results})


if __name__ == "__main__":
    main()
