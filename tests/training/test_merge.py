"""``botkit adapters merge``: the adapter folded into the base weights, as a plain model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from botkit.errors import AdapterError, TrainingError
from botkit.model.lora import AdapterSet
from botkit.training.merge import MERGE_RECORD, merge_adapter
from tests.training.conftest import load_tiny, sample_ids, save_tiny_llama


def test_the_merged_model_loads_without_peft_and_gives_the_adapters_logits(
    adapter_dir: Path, llama_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"

    base_id = merge_adapter(
        adapter_dir, out, base_source=None, default_source="embedded", cache_dir=model_cache
    )

    assert base_id == llama_dir.name  # found through the manifest's base_source
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    loaded = load_tiny(llama_dir, model_cache)
    ids = sample_ids(loaded.tokenizer)
    adapters = AdapterSet(loaded.model, base_weights_hash=loaded.weights_hash)
    adapters.load("pine", adapter_dir)
    with torch.no_grad(), adapters.use("pine") as model:
        expected = model(input_ids=ids).logits
    with torch.no_grad(), adapters.use(None) as model:
        base = model(input_ids=ids).logits
    with torch.no_grad():
        actual = merged(input_ids=ids).logits

    assert (expected - base).abs().max() > 1e-2
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
    record = json.loads((out / MERGE_RECORD).read_text(encoding="utf-8"))
    assert record["base_weights_hash"] == loaded.weights_hash
    assert (out / "tokenizer_config.json").is_file()


def test_merge_refuses_an_existing_non_empty_output(
    adapter_dir: Path, llama_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")

    with pytest.raises(TrainingError, match="already exists; choose a new directory"):
        merge_adapter(adapter_dir, out, base_source=str(llama_dir), default_source="embedded",
                      cache_dir=model_cache)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_merge_refuses_a_base_with_other_weights(
    adapter_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    other = save_tiny_llama(tmp_path / "other-llama", seed=5)
    out = tmp_path / "merged"

    with pytest.raises(AdapterError, match="was trained on base weights .* pass the right model"):
        merge_adapter(adapter_dir, out, base_source=str(other), default_source="embedded",
                      cache_dir=model_cache)
    assert not out.exists()
