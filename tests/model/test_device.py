from __future__ import annotations

import pytest
import torch

from botkit.errors import ModelError
from botkit.model import choose_device, choose_dtype, cpu_has_native_bf16
from botkit.model import device as device_module


def test_auto_device_is_cuda_only_when_cuda_is_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected
    assert choose_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_asking_for_missing_cuda_is_a_model_error_that_says_what_to_do(spec: str) -> None:
    with pytest.raises(ModelError, match="CUDA is not available.*auto or cpu"):
        choose_device(spec)


def test_unknown_device_and_dtype_names_are_refused() -> None:
    with pytest.raises(ModelError, match="unknown device 'tpu'"):
        choose_device("tpu")
    with pytest.raises(ModelError, match="unknown dtype 'int4'"):
        choose_dtype("int4", torch.device("cpu"))


def test_auto_dtype_on_cpu_follows_native_bf16_support() -> None:
    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert choose_dtype("auto", torch.device("cpu")) is expected


def test_auto_dtype_on_cpu_without_native_bf16_is_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert choose_dtype("auto", torch.device("cpu")) is torch.float32


@pytest.mark.parametrize(
    ("spec", "dtype"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
def test_explicit_dtype_is_honoured(spec: str, dtype: torch.dtype) -> None:
    assert choose_dtype(spec, torch.device("cpu")) is dtype


def test_native_bf16_is_read_from_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert cpu_has_native_bf16()
    monkeypatch.setattr(device_module, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not cpu_has_native_bf16()
    monkeypatch.setattr(device_module, "_cpu_flags", frozenset)  # unreadable /proc/cpuinfo
    assert not cpu_has_native_bf16()
