from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from botkit.errors import AdapterError, ModelError
from botkit.model import LoadedModel
from botkit.model.lora_bank import MODULES, LoraBank

from .conftest import tiny_llama_config
from .test_lora import copy_adapter, make_adapter

ALL_MODULES = tuple(MODULES)


def save_lora(model: torch.nn.Module, directory: Path, *, seed: int, **config: object) -> Path:
    """Like ``make_adapter``, for any ``LoraConfig``: lora_B random, so it changes outputs."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(**config))  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def bank_adapters(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, tiny_tokenizer: object
) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    def fresh() -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)

    root = tmp_path_factory.mktemp("bank-adapters")
    with warnings.catch_warnings():  # peft notes it saves the embedding weights too
        warnings.simplefilter("ignore", UserWarning)
        embed = make_adapter(fresh(), root / "embed", target_modules=("embed_tokens",))
    torch.manual_seed(5)
    wider = LlamaForCausalLM(tiny_llama_config(tiny_tokenizer, hidden_size=96))
    return {
        "qv": make_adapter(fresh(), root / "qv", seed=1),
        "all": save_lora(
            fresh(), root / "all", seed=2, r=8, lora_alpha=16, target_modules=list(ALL_MODULES)
        ),
        "rslora": save_lora(
            fresh(),
            root / "rslora",
            seed=3,
            r=8,
            lora_alpha=16,
            use_rslora=True,
            target_modules=["q_proj", "down_proj"],
        ),
        "dora": save_lora(
            fresh(), root / "dora", seed=4, r=4, use_dora=True, target_modules=["q_proj"]
        ),
        "lm_head": make_adapter(fresh(), root / "lm_head", target_modules=("lm_head",)),
        "embed": embed,
        "mismatched": make_adapter(wider, root / "mismatched"),
    }


@pytest.fixture
def base(load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path) -> torch.nn.Module:
    return load_tiny(tiny_llama_dir).model.eval()


def peft_model_of(base: torch.nn.Module, path: Path) -> torch.nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base), str(path)).eval()


def linear_of(model: torch.nn.Module, layer: int, module: str) -> torch.nn.Module:
    return model.get_submodule(f"model.layers.{layer}.{MODULES[module]}.{module}")


def activations(module: torch.nn.Linear, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 5, module.in_features, generator=generator)  # (B, T, in)


def logits_with_bank(
    model: torch.nn.Module, bank: LoraBank, ids: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """The model's forward pass with each row's LoRA delta added after every projection,
    as the serving runtime adds it."""

    def hook_for(layer: int, module: str) -> Callable[..., torch.Tensor]:
        def add_delta(linear: object, inputs: tuple[torch.Tensor], out: torch.Tensor):
            delta = bank.delta(layer, module, inputs[0], rows)
            return out if delta is None else out + delta

        return add_delta

    handles = [
        linear_of(model, layer, module).register_forward_hook(hook_for(layer, module))
        for layer in range(len(model.model.layers))  # type: ignore[union-attr, arg-type]
        for module in ALL_MODULES
    ]
    try:
        with torch.inference_mode():
            return model(input_ids=ids).logits  # (B, T, vocab)
    finally:
        for handle in handles:
            handle.remove()


def logits_of(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits  # (B, T, vocab)


@pytest.fixture
def ids(base: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    return torch.randint(0, base.config.vocab_size, (2, 9), generator=generator)  # (B, T)


@pytest.mark.parametrize(
    ("adapter", "targets"),
    [("qv", ("q_proj", "v_proj")), ("all", ALL_MODULES), ("rslora", ("q_proj", "down_proj"))],
)
def test_delta_plus_linear_equals_the_peft_lora_layer_for_every_targeted_module(
    base: torch.nn.Module, bank_adapters: dict[str, Path], adapter: str, targets: tuple[str, ...]
) -> None:
    bank = LoraBank(base)
    bank.load(adapter, bank_adapters[adapter])
    peft_model = peft_model_of(base, bank_adapters[adapter])
    rows = torch.full((2,), bank.index(adapter))

    for layer in range(2):
        for module in ALL_MODULES:
            linear = linear_of(base, layer, module)
            lora_linear = linear_of(peft_model.base_model.model, layer, module)
            x = activations(linear)  # (B, T, in)
            with torch.no_grad():
                delta = bank.delta(layer, module, x, rows)
                expected = lora_linear(x)
                if module not in targets:
                    assert delta is None
                    continue
                assert delta is not None
                assert delta.shape == (2, 5, linear.out_features)
                assert not torch.allclose(delta, torch.zeros_like(delta))
                assert torch.allclose(linear(x) + delta, expected, atol=1e-5)


def test_mixed_batch_gives_each_row_the_delta_of_its_own_adapter(
    base: torch.nn.Module, bank_adapters: dict[str, Path]
) -> None:
    bank = LoraBank(base)
    bank.load("one", bank_adapters["qv"])
    bank.load("two", bank_adapters["all"])
    names = ["one", None, "two", "one"]
    rows = torch.tensor([bank.index(name) for name in names])
    assert rows.tolist() == [1, 0, 2, 1]

    for layer in range(2):
        for module in ALL_MODULES:
            x = activations(linear_of(base, layer, module), batch=4, seed=layer)  # (4, T, in)
            mixed = bank.delta(layer, module, x, rows)
            assert mixed is not None  # "two" targets every module
            for row, name in enumerate(names):
                alone = bank.delta(layer, module, x[row : row + 1], rows[row : row + 1])
                expected = torch.zeros_like(mixed[row]) if alone is None else alone[0]
                assert torch.allclose(mixed[row], expected, atol=1e-5), (layer, module, name)
            assert torch.equal(mixed[1], torch.zeros_like(mixed[1]))


def test_whole_model_with_bank_deltas_matches_peft_logits_and_rows_zero_the_base(
    base: torch.nn.Module, bank_adapters: dict[str, Path], ids: torch.Tensor
) -> None:
    bank = LoraBank(base)
    bank.load("qv", bank_adapters["qv"])
    bank.load("all", bank_adapters["all"])
    base_logits = logits_of(base, ids)

    for name in ("qv", "all"):
        peft_logits = logits_of(peft_model_of(base, bank_adapters[name]), ids)
        ours = logits_with_bank(base, bank, ids, torch.full((2,), bank.index(name)))
        assert not torch.allclose(peft_logits, base_logits, atol=1e-2)
        assert torch.allclose(ours, peft_logits, atol=1e-4)

    assert torch.equal(
        logits_with_bank(base, bank, ids, torch.zeros(2, dtype=torch.long)), base_logits
    )
    # One row on an adapter, one on the base model, in the same forward pass.
    mixed = logits_with_bank(base, bank, ids, torch.tensor([bank.index("all"), 0]))
    all_logits = logits_of(peft_model_of(base, bank_adapters["all"]), ids)
    assert torch.allclose(mixed[0], all_logits[0], atol=1e-4)
    assert torch.allclose(mixed[1], base_logits[1], atol=1e-4)


def test_delta_is_none_for_untargeted_modules_all_base_rows_and_an_empty_bank(
    base: torch.nn.Module, bank_adapters: dict[str, Path]
) -> None:
    bank = LoraBank(base)
    x = activations(linear_of(base, 0, "q_proj"))
    assert bank.delta(0, "q_proj", x, torch.zeros(2, dtype=torch.long)) is None

    bank.load("qv", bank_adapters["qv"])
    on_adapter = torch.full((2,), bank.index("qv"))
    assert bank.index(None) == 0
    assert bank.delta(0, "k_proj", x, on_adapter) is None
    assert bank.delta(0, "q_proj", x, torch.zeros(2, dtype=torch.long)) is None
    assert bank.delta(0, "q_proj", x, on_adapter) is not None


def test_rslora_scales_by_alpha_over_sqrt_rank(
    base: torch.nn.Module, bank_adapters: dict[str, Path], tmp_path: Path
) -> None:
    plain = copy_adapter(bank_adapters["rslora"], tmp_path / "plain")
    config = json.loads((plain / "adapter_config.json").read_text())
    config["use_rslora"] = False
    (plain / "adapter_config.json").write_text(json.dumps(config))
    bank = LoraBank(base)
    bank.load("rs", bank_adapters["rslora"])
    bank.load("plain", plain)
    x = activations(linear_of(base, 1, "q_proj"))

    rs = bank.delta(1, "q_proj", x, torch.full((2,), bank.index("rs")))
    flat = bank.delta(1, "q_proj", x, torch.full((2,), bank.index("plain")))

    assert rs is not None
    assert flat is not None
    # alpha / sqrt(r) against alpha / r, with r = 8
    assert torch.allclose(rs, flat * 8**0.5, atol=1e-5)


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ("dora", "uses DoRA"),
        ("lm_head", r"changes lm_head; .*not embed_tokens or lm_head"),
        ("embed", r"changes model.embed_tokens; "),
        ("mismatched", "does not fit the base model"),
    ],
)
def test_adapters_the_bank_cannot_apply_are_refused_naming_the_directory(
    base: torch.nn.Module, bank_adapters: dict[str, Path], adapter: str, message: str
) -> None:
    bank = LoraBank(base)
    with pytest.raises(AdapterError, match=rf"adapter in \S*{adapter} .*{message}"):
        bank.load("x", bank_adapters[adapter])
    assert bank.names == ()


def test_truncated_weights_are_refused_naming_the_directory(
    base: torch.nn.Module, bank_adapters: dict[str, Path], tmp_path: Path
) -> None:
    broken = copy_adapter(bank_adapters["qv"], tmp_path / "truncated")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(AdapterError, match=r"adapter_model.safetensors .*truncated.*truncated"):
        LoraBank(base).load("x", broken)


def test_unknown_names_are_adapter_errors(base: torch.nn.Module) -> None:
    bank = LoraBank(base)
    with pytest.raises(AdapterError, match="no adapter named 'ghost' is loaded"):
        bank.unload("ghost")
    with pytest.raises(AdapterError, match="no adapter named 'ghost' is loaded"):
        bank.index("ghost")
    with pytest.raises(AdapterError, match="no adapter named 'ghost' is loaded"):
        bank.info("ghost")


def test_failed_reload_keeps_the_old_adapter_working(
    base: torch.nn.Module, bank_adapters: dict[str, Path]
) -> None:
    bank = LoraBank(base)
    version = bank.load("persona", bank_adapters["qv"])
    rows = torch.full((2,), bank.index("persona"))
    x = activations(linear_of(base, 0, "q_proj"))
    before = bank.delta(0, "q_proj", x, rows)

    with pytest.raises(AdapterError, match="mismatched"):
        bank.load("persona", bank_adapters["mismatched"])

    assert bank.names == ("persona",)
    assert bank.info("persona").version == version
    after = bank.delta(0, "q_proj", x, rows)
    assert before is not None
    assert after is not None
    assert torch.equal(after, before)


def test_indices_stay_put_across_reload_and_unload(
    base: torch.nn.Module, bank_adapters: dict[str, Path]
) -> None:
    bank = LoraBank(base)
    bank.load("one", bank_adapters["qv"])
    bank.load("two", bank_adapters["all"])
    x = activations(linear_of(base, 0, "v_proj"))
    two_rows = torch.full((2,), bank.index("two"))
    two_delta = bank.delta(0, "v_proj", x, two_rows)

    bank.load("one", bank_adapters["rslora"])  # a new version under the same name
    assert (bank.index("one"), bank.index("two")) == (1, 2)
    bank.unload("one")
    assert bank.names == ("two",)
    assert bank.index("two") == 2
    assert torch.equal(bank.delta(0, "v_proj", x, torch.full((2,), 2)), two_delta)
    with pytest.raises(AdapterError, match=r"indices \[1\]"):
        bank.delta(0, "v_proj", x, torch.tensor([1, 2]))
    bank.load("three", bank_adapters["qv"])
    assert bank.index("three") == 1  # the freed slot is reused


def test_a_peft_wrapped_model_is_refused(
    base: torch.nn.Module, bank_adapters: dict[str, Path]
) -> None:
    wrapped = peft_model_of(base, bank_adapters["qv"])
    with pytest.raises(ModelError, match="not one wrapped by peft"):
        LoraBank(wrapped.base_model.model)
