from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from botkit.errors import AdapterError
from botkit.model import AdapterSet, LoadedModel, validate_adapter_dir
from botkit.model.lora import MANIFEST

from .conftest import tiny_llama_config


def make_adapter(
    model: torch.nn.Module,
    directory: Path,
    *,
    seed: int = 0,
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
) -> Path:
    """Save a LoRA adapter for ``model`` whose lora_B weights are not zero, so it
    changes the output (a fresh adapter is an exact no-op). Both lora_A and lora_B come
    from ``seed`` alone, so an adapter does not depend on which tests ran before."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=list(target_modules)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
            elif "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def adapter_dirs(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, tiny_tokenizer: object
) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    dirs = {
        name: make_adapter(
            AutoModelForCausalLM.from_pretrained(tiny_llama_dir), root / name, seed=seed
        )
        for name, seed in [("alpha", 1), ("beta", 2)]
    }
    torch.manual_seed(5)
    wider = LlamaForCausalLM(tiny_llama_config(tiny_tokenizer, hidden_size=96))
    dirs["mismatched"] = make_adapter(wider, root / "mismatched")
    return dirs


@pytest.fixture
def base(load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path) -> LoadedModel:
    return load_tiny(tiny_llama_dir)


@pytest.fixture
def prompt_ids(base: LoadedModel) -> torch.Tensor:
    return base.tokenizer("How do I reset my password?", return_tensors="pt")["input_ids"]


def logits_of(module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module(input_ids=ids).logits  # (1, T, vocab)


def test_adapter_changes_logits_and_none_gives_back_the_base_exactly(
    base: LoadedModel, adapter_dirs: dict[str, Path], prompt_ids: torch.Tensor
) -> None:
    adapters = AdapterSet(base.model)
    base_logits = logits_of(base.model, prompt_ids)

    version = adapters.load("alpha", adapter_dirs["alpha"])

    assert version == validate_adapter_dir(adapter_dirs["alpha"]).version
    with adapters.use("alpha") as model:
        alpha_logits = logits_of(model, prompt_ids)
    with adapters.use(None) as model:
        restored = logits_of(model, prompt_ids)
    assert not torch.allclose(alpha_logits, base_logits, atol=1e-3)
    assert torch.equal(restored, base_logits)


def test_adapter_names_that_are_module_attributes_work(
    base: LoadedModel, adapter_dirs: dict[str, Path], prompt_ids: torch.Tensor
) -> None:
    # Persona names become adapter names; peft's ModuleDicts refuse "eval", "train"...
    adapters = AdapterSet(base.model)
    adapters.load("eval", adapter_dirs["alpha"])
    adapters.load("train", adapter_dirs["beta"])

    with adapters.use("eval") as model:
        first = logits_of(model, prompt_ids)
    with adapters.use("train") as model:
        second = logits_of(model, prompt_ids)

    assert adapters.names == ("eval", "train")
    assert not torch.allclose(first, second, atol=1e-3)
    adapters.unload("eval")
    adapters.unload("train")
    assert adapters.names == ()


def test_several_adapters_live_side_by_side_and_unload(
    base: LoadedModel, adapter_dirs: dict[str, Path], prompt_ids: torch.Tensor
) -> None:
    adapters = AdapterSet(base.model)
    base_logits = logits_of(base.model, prompt_ids)
    adapters.load("alpha", adapter_dirs["alpha"])
    with adapters.use("alpha") as model:
        alpha_logits = logits_of(model, prompt_ids)
    adapters.load("beta", adapter_dirs["beta"])

    with adapters.use("beta") as model:
        beta_logits = logits_of(model, prompt_ids)
    with adapters.use("alpha") as model:
        assert torch.equal(logits_of(model, prompt_ids), alpha_logits)
    assert not torch.allclose(alpha_logits, beta_logits, atol=1e-3)
    assert adapters.names == ("alpha", "beta")

    adapters.unload("alpha")
    with pytest.raises(AdapterError, match="no adapter named 'alpha'"):
        adapters.use("alpha").__enter__()
    adapters.unload("beta")
    assert torch.equal(logits_of(base.model, prompt_ids), base_logits)
    adapters.load("alpha", adapter_dirs["alpha"])  # wrapping again after a full unload works
    with adapters.use("alpha") as model:
        assert torch.equal(logits_of(model, prompt_ids), alpha_logits)


def test_adapter_for_another_model_is_refused_and_earlier_adapters_still_work(
    base: LoadedModel, adapter_dirs: dict[str, Path], prompt_ids: torch.Tensor
) -> None:
    adapters = AdapterSet(base.model)
    adapters.load("alpha", adapter_dirs["alpha"])
    with adapters.use("alpha") as model:
        alpha_logits = logits_of(model, prompt_ids)

    with pytest.raises(AdapterError, match=r"mismatched.*does not fit the base model"):
        adapters.load("wrong", adapter_dirs["mismatched"])

    assert adapters.names == ("alpha",)
    with adapters.use("alpha") as model:
        assert torch.equal(logits_of(model, prompt_ids), alpha_logits)


def test_mismatched_first_adapter_leaves_the_base_model_untouched(
    base: LoadedModel, adapter_dirs: dict[str, Path], prompt_ids: torch.Tensor
) -> None:
    adapters = AdapterSet(base.model)
    base_logits = logits_of(base.model, prompt_ids)
    with pytest.raises(AdapterError, match="mismatched"):
        adapters.load("wrong", adapter_dirs["mismatched"])
    with adapters.use(None) as model:
        assert torch.equal(logits_of(model, prompt_ids), base_logits)


def test_peft_failure_after_checks_is_an_adapter_error_and_leaves_base_clean(
    base: LoadedModel,
    adapter_dirs: dict[str, Path],
    prompt_ids: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import peft

    def broken_load(*args: object, **kwargs: object) -> None:
        raise RuntimeError("size mismatch for lora_A")

    monkeypatch.setattr(peft.PeftModel, "load_adapter", broken_load)
    adapters = AdapterSet(base.model)
    base_logits = logits_of(base.model, prompt_ids)

    with pytest.raises(AdapterError, match=r"could not load the adapter in .*alpha"):
        adapters.load("alpha", adapter_dirs["alpha"])

    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in base.model.modules())
    assert torch.equal(logits_of(base.model, prompt_ids), base_logits)


def copy_adapter(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    return target


def test_truncated_weights_are_an_adapter_error_naming_the_directory(
    adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    broken = copy_adapter(adapter_dirs["alpha"], tmp_path / "truncated")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(AdapterError, match=r"adapter_model.safetensors .*truncated.*truncated"):
        validate_adapter_dir(broken)


def test_garbage_config_is_an_adapter_error(
    adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    broken = copy_adapter(adapter_dirs["alpha"], tmp_path / "garbage")
    (broken / "adapter_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(AdapterError, match=r"adapter_config.json .*garbage.*unreadable"):
        validate_adapter_dir(broken)


def test_missing_pieces_are_adapter_errors(adapter_dirs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="adapter directory not found"):
        validate_adapter_dir(tmp_path / "absent")
    no_config = copy_adapter(adapter_dirs["alpha"], tmp_path / "no-config")
    (no_config / "adapter_config.json").unlink()
    with pytest.raises(AdapterError, match="has no adapter_config.json"):
        validate_adapter_dir(no_config)
    no_weights = copy_adapter(adapter_dirs["alpha"], tmp_path / "no-weights")
    (no_weights / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="no-weights has no weights"):
        validate_adapter_dir(no_weights)


def test_adapter_info_reads_version_base_model_and_manifest(
    adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    plain = validate_adapter_dir(adapter_dirs["alpha"])
    assert plain.manifest is None
    assert plain.base_model
    assert plain.version != validate_adapter_dir(adapter_dirs["beta"]).version

    with_manifest = copy_adapter(adapter_dirs["alpha"], tmp_path / "with-manifest")
    manifest = {"base_model": "tiny", "base_weights_hash": "abc123", "chat_template": "x"}
    (with_manifest / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")

    info = validate_adapter_dir(with_manifest, base_weights_hash="abc123")
    assert info.manifest == manifest
    assert info.version == plain.version
    with pytest.raises(AdapterError, match="trained on base weights abc123.*retrain"):
        validate_adapter_dir(with_manifest, base_weights_hash="fff999")


def test_load_into_adapter_set_refuses_other_base_weights(
    base: LoadedModel, adapter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    other = copy_adapter(adapter_dirs["alpha"], tmp_path / "other-base")
    (other / MANIFEST).write_text(json.dumps({"base_weights_hash": "0000"}), encoding="utf-8")
    adapters = AdapterSet(base.model, base_weights_hash=base.weights_hash)
    with pytest.raises(AdapterError, match="other-base was trained on base weights 0000"):
        adapters.load("other", other)
    assert adapters.names == ()
