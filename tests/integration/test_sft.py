"""Supervised warm start: transcripts from an oracle, stage=sft (loss falls, adapter loads with
plain PEFT), and RL started from that adapter; the SFT token stream is the rollout's."""

import json
import sys

import gymnasium as gym
import pytest
import torch

import envs  # noqa: F401
from conftest import ROOT, run_train
from lorarl.rollout import ChatFramer, RolloutCollector
from lorarl.sft import encode

sys.path.insert(0, str(ROOT / "scripts"))
import make_transcripts  # noqa: E402


def test_sft_on_oracle_transcripts_lowers_the_loss_and_saves_a_peft_adapter(tmp_path):
    data = tmp_path / "tw.jsonl"
    assert make_transcripts.main(["--env", "target_word", "--episodes", "300", "--out", str(data)]) == 0
    record = json.loads(data.read_text().splitlines()[0])
    assert record["outcome"] == "correct" and [m["role"] for m in record["messages"]] == ["user", "assistant"]
    sft = tmp_path / "sft"
    proc = run_train(["stage=sft", f"sft.data={data}", "env=target_word", "sft.epochs=3", "trainer.progress_bar=false",
                      f"hydra.run.dir={sft}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(line.split("loss=")[1].split()[0]) for line in (sft / "train.log").read_text().splitlines() if " loss=" in line]
    assert len(losses) == 3 and losses[-1] < losses[0] / 4, losses
    ckpt = sft / "checkpoints/iter_000003"
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(ckpt)) is not None
    stats = json.loads((ckpt / "training_stats.json").read_text())
    assert "sft/val_loss" in stats["metrics"]
    # RL from this adapter with the transcripts replayed beside it (sft.replay_coef); test_train.py's
    # learning demo runs RL from an SFT adapter without replay (stage=warmstart, these same two steps)
    rl = tmp_path / "rl"
    proc = run_train(["stage=rl", "env=target_word", "algorithm=grpo", f"model.lora.lora_path={ckpt}", f"sft.data={data}",
                      "sft.replay_coef=1", "trainer.iterations=2", "trainer.eval_every=0", "trainer.checkpoint_every=2",
                      "trainer.progress_bar=false", f"hydra.run.dir={rl}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    replayed = [float(line.split("replay_loss=")[1].split()[0]) for line in (rl / "train.log").read_text().splitlines()
                if "replay_loss=" in line]
    assert len(replayed) == 2 and max(replayed) < losses[0] / 4, (replayed, losses)  # the adapter fits them already
    metrics = json.loads((rl / "checkpoints/iter_000002/training_stats.json").read_text())["metrics"]
    assert metrics["train/replay_loss"] == pytest.approx(replayed[-1], abs=1e-4)


class ReplayPolicy(torch.nn.Module):
    """Replies with given texts in turn (as the tokens a policy would sample, eos included)."""

    def __init__(self, tok, replies):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.queue = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in replies]

    def generate(self, input_ids, *args, **kwargs):
        from lorarl.policy import Generation

        ids = torch.tensor([self.queue.pop(0)])
        return Generation(ids, torch.zeros(ids.shape), torch.tensor([ids.shape[1]]))


def test_transcript_tokens_are_the_rollout_tokens(tiny_tokenizer, defaults, tmp_path):
    """SFT teaches exactly the token stream RL samples: an oracle transcript, encoded, is token for
    token the rollout of the same replies, and its trained tokens are the rollout's action tokens."""
    from lorarl.transcripts import oracle_transcripts

    kwargs = {"prompt_format": "chat", "max_rounds": 3}
    (record,) = oracle_transcripts("lorarl/DBBench-v0", kwargs, [7])
    assert record["prompt_turns"] == 3  # the instructions, AgentBench's scripted "Ok.", the question
    replies = [m["content"] for m in record["messages"][record["prompt_turns"]:] if m["role"] == "assistant"]
    env = gym.make("lorarl/DBBench-v0", **kwargs)
    collector = RolloutCollector([env], tiny_tokenizer, defaults.algorithm.sampling, defaults.reward)
    (ep,) = collector.collect(ReplayPolicy(tiny_tokenizer, replies), [7], [0])
    assert ep.outcome == "correct" and ep.messages == record["messages"]
    ids, mask = encode(record["messages"], record["prompt_turns"], ChatFramer(tiny_tokenizer), 10_000)
    assert ids == ep.token_ids and mask == ep.action_mask


def test_bpe_tokenizer_round_trips_and_saves(tmp_path):
    from lorarl.tokenizer import load_tokenizer, train_bpe_tokenizer

    env = gym.make("lorarl/DBBench-v0")
    texts = [env.reset(seed=s)[0] for s in range(50)]
    tok = train_bpe_tokenizer(texts, 800)
    weird = texts[0] + " ünïcödé 漢字 \x00"
    assert tok.decode(tok(weird, add_special_tokens=False)["input_ids"]) == weird
    assert len(tok(texts[1], add_special_tokens=False)["input_ids"]) < len(texts[1].encode()) / 3
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    assert again(texts[2])["input_ids"] == tok(texts[2])["input_ids"] and again.chat_template == tok.chat_template
