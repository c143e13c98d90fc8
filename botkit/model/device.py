"""Where the model runs and in which precision.

``auto`` means CUDA when present, else the CPU; bf16 on CUDA and on CPUs with native
bf16 instructions (AVX512-BF16 or AMX, where it roughly doubles decode speed), else fp32.
Every choice can be overridden in ``[model] device`` and ``[model] dtype``.
"""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

import torch

from botkit.errors import ModelError

#: CPU flags (as Linux spells them in /proc/cpuinfo) that mean bf16 matmuls in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags, or an empty set where they cannot be read (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in {"flags", "Features"}:
            flags.update(value.split())
    return frozenset(flags)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware, so bf16 is the faster CPU dtype."""
    if platform.machine().lower() not in {"x86_64", "amd64", "i686", "x86"}:
        # ARM's bf16 extension (flag "bf16") is not used by torch's CPU kernels the same
        # way; stay with fp32 there unless asked.
        return False
    return bool(_cpu_flags() & NATIVE_BF16_FLAGS)


_CUDA_SPEC = re.compile(r"cuda(?::(\d+))?")


def choose_device(spec: str = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device that exists here."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = _CUDA_SPEC.fullmatch(spec)
    if match is None:
        raise ModelError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ModelError(
            f"device {spec!r} was asked for but CUDA is not available here "
            "(no GPU, or a CPU-only torch build); set [model] device to auto or cpu"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ModelError(f"device {spec!r} was asked for but only {count} CUDA device(s) exist")
    return torch.device(spec)


def choose_dtype(spec: str, device: torch.device) -> torch.dtype:
    """Turn ``auto`` or a dtype name into the precision the model runs in on ``device``."""
    spec = spec.strip().lower()
    if spec in DTYPES:
        return DTYPES[spec]
    if spec != "auto":
        raise ModelError(f"unknown dtype {spec!r}; use auto, float32, bfloat16 or float16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``, for logs and reports."""
    return str(dtype).removeprefix("torch.")
