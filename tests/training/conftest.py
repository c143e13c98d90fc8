"""Tiny real models, data files and configs for the training tests.

The models are the model suite's tiny Llama and GPT-2 (hidden size 64, two layers,
a locally trained BPE tokenizer with a ChatML template), saved to disk once per
session, so training, evaluation and merging load them exactly as a user's model
directory is loaded. One adapter is trained once per session and shared (read-only:
tests that change an adapter copy it first).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from botkit.training.run import TrainJob, TrainOutcome, train
from botkit.training.trainer import TrainSettings
from tests.model.conftest import CHATML, build_tokenizer, tiny_llama_config

PERSONA_PROMPT = "You are Pine, the Harbor & Pine virtual assistant."

# Short and repetitive, from the tokenizer's own sentences: a tiny model learns them
# within a few epochs, so the loss visibly falls.
QA = [
    ("How do I reset my password?", "Open the settings page and choose reset password."),
    ("When does my order ship?", "The order ships in three to five business days."),
    ("Hello there, how are you today?", "I am fine, thank you."),
    ("The problem persists.", "Please contact support if the problem persists."),
]


def openai_line(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def support_dialogues(copies: int = 2) -> list[dict[str, Any]]:
    """``copies`` of every question and answer in ``QA``, one dialogue each."""
    return [openai_line(("user", q), ("assistant", a)) for _ in range(copies) for q, a in QA]


def settings(**overrides: Any) -> TrainSettings:
    """Small, fast settings for the tiny models: rank 4, lr 1e-2, no early stopping."""
    values: dict[str, Any] = {
        "rank": 4, "alpha": 8, "epochs": 3, "batch_size": 4, "lr": 1e-2,
        "val_fraction": 0.25, "patience": 0, "seed": 0, "warmup_ratio": 0.0,
    }
    values.update(overrides)
    return TrainSettings(**values)


def make_job(
    model_dir: Path, data: Path, output: Path, cache: Path, **fields: Any
) -> TrainJob:
    fields.setdefault("settings", settings())
    return TrainJob(
        data=data, output=output, model_source=str(model_dir), cache_dir=cache,
        persona="pine", system_prompt=PERSONA_PROMPT, device="cpu", progress=False,
        **fields,
    )


def load_tiny(model_dir: Path, cache: Path) -> Any:
    from botkit.model.loading import load_model

    return load_model(str(model_dir), device="cpu", dtype="float32", cache_dir=cache)


def sample_ids(tokenizer: Any) -> torch.Tensor:
    """A ChatML prompt as a (1, T) batch, for comparing logits."""
    ids = tokenizer.apply_chat_template(
        [{"role": "system", "content": PERSONA_PROMPT},
         {"role": "user", "content": "How do I reset my password?"}],
        add_generation_prompt=True, tokenize=True, return_dict=False,
    )
    return torch.tensor([list(ids)])


def save_tiny_llama(directory: Path, seed: int) -> Path:
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer()
    assert tokenizer.chat_template == CHATML  # type: ignore[attr-defined]
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: plenty for these models, and on a busy machine a team of
    threads waiting on each other made the first epoch a hundred times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=64, n_layer=2, n_head=4,  # type: ignore[arg-type]
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
    )
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """botkit's model cache folder (it memoizes weight hashes there)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def support_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "support.jsonl", support_dialogues())


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory, llama_dir: Path, support_data: Path,
    model_cache: Path,
) -> tuple[TrainOutcome, list[str]]:
    """A finished 3-epoch LoRA run on the tiny Llama: (outcome, the lines it printed).

    Shared by several tests: copy ``outcome.output`` before changing anything in it.
    """
    lines: list[str] = []
    output = tmp_path_factory.mktemp("run") / "pine"
    outcome = train(make_job(llama_dir, support_data, output, model_cache), say=lines.append)
    return outcome, lines


@pytest.fixture(scope="session")
def adapter_dir(trained: tuple[TrainOutcome, list[str]]) -> Path:
    return trained[0].output


@pytest.fixture
def make_config(
    tmp_path: Path, llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """Write personas/pine.toml and botkit.toml in ``tmp_path``; returns the config path.

    ``[model] source`` is the tiny Llama, ``[bot] data_dir`` is ``tmp_path/data``, the
    persona uses ``adapter`` when given and ``engine`` is the ``[runtime] engine``.
    BOTKIT_* variables are cleared so that the file alone decides.
    """
    for var in list(os.environ):
        if var.startswith("BOTKIT_"):
            monkeypatch.delenv(var)

    def write(adapter: Path | None = None, engine: str = "batched") -> Path:
        personas = tmp_path / "personas"
        personas.mkdir(exist_ok=True)
        persona = [
            'name = "pine"',
            'display_name = "Pine"',
            f"system_prompt = {json.dumps(PERSONA_PROMPT)}",
            f"adapter = {json.dumps(str(adapter) if adapter else '')}",
        ]
        (personas / "pine.toml").write_text("\n".join(persona) + "\n", encoding="utf-8")
        config = tmp_path / "botkit.toml"
        config.write_text(
            "[bot]\n"
            f"data_dir = {json.dumps(str(tmp_path / 'data'))}\n"
            f"personas_dir = {json.dumps(str(personas))}\n"
            'default_persona = "pine"\n'
            "[model]\n"
            f"source = {json.dumps(str(llama_dir))}\n"
            'device = "cpu"\n'
            'dtype = "float32"\n'
            "[runtime]\n"
            f"engine = {json.dumps(engine)}\n"
            "kv_cache_tokens = 4096\n"
            "prefix_cache = false\n",
            encoding="utf-8",
        )
        return config

    return write


def copy_adapter(adapter: Path, into: Path) -> Path:
    """A private copy of a shared adapter directory."""
    shutil.copytree(adapter, into)
    return into
