"""Device and dtype choice: CUDA when present, the CPU otherwise; bfloat16 where it is native."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

DTYPE_VARIABLE = "SHUFFLELM_DTYPE"  # sets what dtype="auto" means (the tests pin float32)

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is available here")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto': bfloat16 on CUDA and on a CPU that computes it natively (AVX-512 BF16 or AMX),
    float32 on other CPUs (where bfloat16 products are emulated and slower)."""
    return choose_dtype(dtype, device)[0]


def choose_dtype(dtype: str | torch.dtype | None, device: torch.device) -> tuple[torch.dtype, str]:
    """The dtype to run in, and why, in words a user reads in the app and the CLI."""
    if isinstance(dtype, torch.dtype):
        return dtype, "asked for"
    if (dtype is None or dtype == "auto") and os.environ.get(DTYPE_VARIABLE, "auto") != "auto":
        return _named(os.environ[DTYPE_VARIABLE], DTYPE_VARIABLE), f"set by {DTYPE_VARIABLE}"
    if dtype is None or dtype == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16, "a GPU computes bfloat16 natively"
        native = native_bfloat16()
        if native:
            return torch.bfloat16, f"this CPU computes bfloat16 natively ({native})"
        return torch.float32, "this CPU has no native bfloat16 (no AVX-512 BF16 or AMX)"
    return _named(dtype, "dtype"), "asked for"


def _named(dtype: str, setting: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"{setting} must be one of {['auto', *DTYPES]}; got {dtype!r}")
    return DTYPES[dtype]


def native_bfloat16() -> str | None:
    """The CPU's bfloat16 instructions ('AMX', 'AVX-512 BF16'), or None where it has none."""
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    if capabilities.get("amx_bf16"):
        return "AMX"
    if capabilities.get("avx512_bf16"):
        return "AVX-512 BF16"
    return None


def precision_note(model) -> str:
    """The dtype a model runs in and why, e.g. "bfloat16 (this CPU computes bfloat16 natively
    (AMX))", for the app's status line and the CLI."""
    dtype = str(model.dtype).replace("torch.", "")
    reason = getattr(model, "dtype_reason", None)
    return f"{dtype} ({reason})" if reason else dtype


def cpu_name() -> str:
    """The CPU's model name (what costs and dtype choices are cached by)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
