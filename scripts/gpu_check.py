"""One strategy, each of its precisions, proven end to end on one GPU, in this one process:

  2 RL iterations on db_bench (the Qwen2.5-0.5B architecture from its config, random weights: no
  download), the adapter saved in PEFT format and verified against its manifest, loaded with
  plain PEFT and run, then a resumed third iteration (a second fit in this process, from the
  checkpoint on disk).

    python scripts/gpu_check.py STRATEGY OUT_DIR [--precisions bf16-true,bf16-mixed] [--base DIR]

Writes one JSON line per precision to OUT_DIR/gpu_check.jsonl as soon as it is known, so a run
stopped by its time limit still returns what finished. ``--base``: a saved base model to load
instead of initialising 0.5B random weights again (scripts/gpu_check.sh passes the first run's).
Called by scripts/gpu_check.sh: one process start per strategy keeps the whole check within a
single device call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from lorarl.schema import load

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return load(hydra_compose("config", overrides=overrides))


def fit(overrides: list[str], run: Path) -> tuple[bool, str]:
    from lorarl.factory import build_run

    trainer, module, resume = build_run(compose(overrides), run)
    trainer.fit(module, ckpt_path=resume)
    return bool(resume), resume or ""


def peft_loads(ckpt: Path, device: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = json.loads((ckpt / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), str(ckpt))
    with torch.no_grad():
        logits = model.to(device)(input_ids=torch.tensor([[257, 72, 105, 258]], device=device)).logits
    assert torch.isfinite(logits).all(), "non-finite logits"


def check(strategy: str, precision: str, out: Path, base: str | None, args) -> dict:
    from lorarl.checkpointing import verify

    run = out / f"{strategy}-{precision}"
    overrides = [f"model={args.model}", f"strategy={strategy}", f"precision={precision}", "env=db_bench",
                 f"trainer.accelerator={args.accelerator}", "trainer.devices=1", "trainer.checkpoint_every=1",
                 "trainer.progress_bar=false", f"algorithm.envs_per_rank={args.envs}", "trainer.transcripts_every=0",
                 f"algorithm.sampling.max_new_tokens={args.new_tokens}", *([f"model.path={base}"] if base else [])]
    row = {"strategy": strategy, "precision": precision, "train": "FAIL", "adapter": "FAIL", "peft": "FAIL",
           "resume": "FAIL", "seconds": 0.0, "phases_s": {}, "error": ""}
    start = last = time.monotonic()
    stage = "train"

    def done(name: str) -> None:
        nonlocal last
        row[name], row["phases_s"][name] = "ok", round(time.monotonic() - last, 1)
        last = time.monotonic()

    try:
        fit(overrides + ["trainer.iterations=2"], run)
        done("train")
        stage = "adapter"
        ckpt = run / "checkpoints/iter_000002"
        assert (ckpt / "adapter_model.safetensors").exists(), "no adapter_model.safetensors"
        assert (problem := verify(ckpt)) is None, problem
        done("adapter")
        stage = "peft"
        peft_loads(ckpt, "cuda" if args.accelerator == "gpu" else "cpu")
        done("peft")
        stage = "resume"
        resumed, path = fit(overrides + ["trainer.iterations=3"], run)
        assert resumed and path.endswith("iter_000002/trainer_state.pt"), f"did not resume from iteration 2 ({path!r})"
        assert verify(run / "checkpoints/iter_000003") is None, "no verified iter_000003"
        done("resume")
    except Exception as e:  # noqa: BLE001  a failing combination is a row of the table, not the end of the check
        row["error"] = f"{stage}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        (out / f"{strategy}-{precision}.traceback").write_text(traceback.format_exc())
    row["seconds"] = round(time.monotonic() - start, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("strategy")
    p.add_argument("out", type=Path)
    p.add_argument("--precisions", default="bf16-true")
    p.add_argument("--model", default="qwen2.5-0.5b-random")
    p.add_argument("--base", help="a saved base model directory to load instead of building one")
    p.add_argument("--accelerator", default="gpu", help="cpu: measure the phases here, to budget the GPU call")
    p.add_argument("--envs", type=int, default=8, help="episodes per iteration")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens per reply")
    args = p.parse_args()
    import envs  # noqa: F401
    from lorarl.logs import quiet_console

    quiet_console(progress_bar=False)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for precision in args.precisions.split(","):
        row = check(args.strategy, precision, args.out, args.base, args)
        row["process_s"] = round(time.monotonic() - started, 1)  # imports and earlier precisions included
        with open(args.out / "gpu_check.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
