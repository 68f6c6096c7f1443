"""Saving an adapter makes no hub call, whatever base model it names."""

from types import SimpleNamespace

import pytest
import safetensors.torch

from lorarl.checkpointing import save_policy_files, targets_embeddings

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["q_proj", "embed_tokens"]])
def test_saving_names_the_hub_base_without_asking_the_hub(tiny_lm, targets, tmp_path, monkeypatch):
    import peft.utils.save_and_load as peft_save
    from peft import LoraConfig, get_peft_model

    def no_hub(*args, **kwargs):
        raise AssertionError(f"a hub call while saving an adapter: {args}")

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", no_hub)
    tiny_lm.name_or_path = HUB_ID  # as from_pretrained(HUB_ID) leaves it
    lm = get_peft_model(tiny_lm, LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))
    assert lm.peft_config["default"].base_model_name_or_path == HUB_ID
    state = {f"lm.{k}": v for k, v in lm.state_dict().items()}
    save_policy_files(SimpleNamespace(lm=lm), state, tmp_path)
    saved = safetensors.torch.load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in saved)
    # an adapter on the embeddings carries them (PEFT's "auto" chose that without the hub too)
    assert targets_embeddings(lm) == ("embed_tokens" in targets)
    assert any("embed_tokens" in k for k in saved) == ("embed_tokens" in targets)
