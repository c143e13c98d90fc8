"""``botkit train`` end to end on tiny real models: lines printed, files written, resume."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from botkit.errors import AdapterError, TrainingError
from botkit.model.lora import AdapterSet
from botkit.training.artifacts import lora_state, save_adapter
from botkit.training.data import file_sha256
from botkit.training.run import TrainOutcome, train
from botkit.training.trainer import wrap_for_training
from tests.training.conftest import (
    copy_adapter,
    load_tiny,
    make_job,
    sample_ids,
    settings,
    write_jsonl,
)

EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+)  train loss (\d+\.\d{3})  val loss (\d+\.\d{3})  val ppl (\d+\.\d{2})"
)
MANIFEST_KEYS = {
    "base_model", "base_weights_hash", "chat_template", "hyperparameters", "data", "metrics",
    "botkit_version",
}


def epoch_lines(lines: list[str]) -> list[re.Match[str]]:
    return [m for m in map(EPOCH_LINE.match, lines) if m]


def adapter_logits(
    model_dir: Path, cache: Path, adapter: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """(base logits, logits with ``adapter``) for one prompt, from a fresh load."""
    loaded = load_tiny(model_dir, cache)
    adapters = AdapterSet(loaded.model, base_weights_hash=loaded.weights_hash)
    adapters.load("trained", adapter)
    ids = sample_ids(loaded.tokenizer)
    with torch.no_grad():
        with adapters.use(None) as model:
            base = model(input_ids=ids).logits
        with adapters.use("trained") as model:
            tuned = model(input_ids=ids).logits
    return base, tuned


def test_each_epoch_prints_one_line_and_training_loss_falls(
    trained: tuple[TrainOutcome, list[str]],
) -> None:
    outcome, lines = trained

    matches = epoch_lines(lines)
    assert [(int(m[1]), int(m[2])) for m in matches] == [(1, 3), (2, 3), (3, 3)]
    train_losses = [float(m[3]) for m in matches]
    assert train_losses[0] > train_losses[1] > train_losses[2]
    assert [row["train_loss"] for row in outcome.state.history] == pytest.approx(
        train_losses, abs=1e-3
    )
    for match in matches:
        assert float(match[5]) == pytest.approx(math.exp(float(match[4])), rel=1e-2)
    assert lines[-1] == f"adapter written to {outcome.output} (loss curve: loss_curve.png)"


def test_the_output_holds_adapter_manifest_metrics_and_plot(
    trained: tuple[TrainOutcome, list[str]], support_data: Path, llama_dir: Path,
    model_cache: Path,
) -> None:
    out = trained[0].output

    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "botkit_manifest.json",
        "loss_curve.png", "metrics.json",
    ]
    manifest = json.loads((out / "botkit_manifest.json").read_text(encoding="utf-8"))
    assert MANIFEST_KEYS <= manifest.keys()
    assert manifest["base_model"] == llama_dir.name
    assert manifest["base_weights_hash"] == load_tiny(llama_dir, model_cache).weights_hash
    assert manifest["chat_template"].startswith("{% for message in messages %}")
    assert manifest["hyperparameters"]["rank"] == 4
    assert manifest["data"]["train"]["sha256"] == file_sha256(support_data)
    assert manifest["metrics"]["best_epoch"] == 3
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    assert metrics["val_loss"] == manifest["metrics"]["val_loss"]
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_adapter_loads_and_changes_the_logits(
    adapter_dir: Path, llama_dir: Path, model_cache: Path
) -> None:
    base, tuned = adapter_logits(llama_dir, model_cache, adapter_dir)

    assert (tuned - base).abs().max() > 1e-2


def test_an_adapter_for_other_base_weights_is_refused(
    adapter_dir: Path, llama_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    adapter = copy_adapter(adapter_dir, tmp_path / "adapter")
    manifest_file = adapter / "botkit_manifest.json"
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    manifest["base_weights_hash"] = "0123456789abcdef"
    manifest_file.write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_tiny(llama_dir, model_cache)

    with pytest.raises(AdapterError, match="was trained on base weights 0123456789abcdef"):
        AdapterSet(loaded.model, base_weights_hash=loaded.weights_hash).load("x", adapter)


def test_a_non_empty_output_needs_overwrite_or_resume(
    llama_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")

    with pytest.raises(TrainingError, match="is not empty; add --resume .* --overwrite"):
        train(make_job(llama_dir, support_data, out, model_cache), say=print)
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_training_stops_early_when_validation_loss_stops_improving(
    llama_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    # A learning rate this small moves the weights by ~1e-9: the validation loss stays
    # flat (well under the 1e-6 that counts as better), on any BLAS, every time.
    job = make_job(llama_dir, support_data, tmp_path / "out", model_cache,
                   settings=settings(lr=1e-9, patience=1, epochs=3))

    outcome = train(job, say=lines.append)

    assert [m[1] for m in epoch_lines(lines)] == ["1", "2"]
    assert (
        "stopping early: validation loss has not improved for 1 epoch(s) (best: epoch 1)" in lines
    )
    metrics = json.loads((outcome.output / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["stopped_early"], metrics["epochs_run"], metrics["best_epoch"]) == (True, 2, 1)


def test_an_interrupted_run_resumes_to_the_same_adapter(
    llama_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path,
    adapter_dir: Path,
) -> None:
    out = tmp_path / "out"

    def interrupt_after_epoch_1(line: str) -> None:
        if line.startswith("epoch 1/3"):
            raise KeyboardInterrupt

    resume_hint = "the checkpoint of epoch 1 is intact; continue with --resume"
    with pytest.raises(TrainingError, match=resume_hint):
        train(make_job(llama_dir, support_data, out, model_cache), say=interrupt_after_epoch_1)
    assert not (out / "adapter_model.safetensors").exists()

    with pytest.raises(TrainingError, match="the run used different settings"):
        train(make_job(llama_dir, support_data, out, model_cache, resume=True,
                       settings=settings(lr=5e-3)), say=print)

    lines: list[str] = []
    train(make_job(llama_dir, support_data, out, model_cache, resume=True), say=lines.append)

    assert lines[2].startswith("resuming after epoch 1 from ")
    assert [m[1] for m in epoch_lines(lines)] == ["2", "3"]
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]
    resumed = load_file(str(out / "adapter_model.safetensors"))
    uninterrupted = load_file(str(adapter_dir / "adapter_model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    for key, tensor in uninterrupted.items():
        assert torch.allclose(resumed[key], tensor, atol=1e-6), key


def test_adalora_trains_and_saves_a_plain_lora_adapter(
    llama_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    job = make_job(llama_dir, support_data, tmp_path / "out", model_cache,
                   settings=settings(method="adalora", epochs=2))

    outcome = train(job, say=lambda line: None)

    config = json.loads((outcome.output / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["peft_type"] == "LORA"
    assert config["r"] == config["lora_alpha"] == 4  # AdaLoRA's scale is folded into B
    assert outcome.manifest["method"] == "adalora"
    base, tuned = adapter_logits(llama_dir, model_cache, outcome.output)
    assert (tuned - base).abs().max() > 1e-3


def test_adalora_to_lora_conversion_keeps_the_logits(
    llama_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    loaded = load_tiny(llama_dir, model_cache)
    peft_model = wrap_for_training(
        loaded.model, settings(method="adalora"), total_steps=20, base_name="tiny"
    )
    generator = torch.Generator().manual_seed(0)
    changed = 0
    for name, param in peft_model.named_parameters():
        if any(part in name for part in ("lora_A", "lora_B", "lora_E")):
            param.data = torch.randn(param.shape, generator=generator) * 0.1
            changed += 1
    assert changed > 0
    ids = sample_ids(loaded.tokenizer)
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits

    config, tensors = lora_state(peft_model, "adalora")
    save_adapter(tmp_path / "converted", config, tensors, None)
    base, converted = adapter_logits(llama_dir, model_cache, tmp_path / "converted")

    assert (expected - base).abs().max() > 1e-2
    torch.testing.assert_close(converted, expected, atol=1e-4, rtol=0)


def test_a_gpt2_model_trains_and_its_adapter_loads(
    gpt2_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    job = make_job(gpt2_dir, support_data, tmp_path / "out", model_cache,
                   settings=settings(epochs=1))

    outcome = train(job, say=lines.append)

    assert [m[0].split("  ")[0] for m in epoch_lines(lines)] == ["epoch 1/1"]
    config = json.loads((outcome.output / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["fan_in_fan_out"] is True
    base, tuned = adapter_logits(gpt2_dir, model_cache, outcome.output)
    assert (tuned - base).abs().max() > 1e-3


def test_a_validation_file_is_reported_separately(
    llama_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    valid = write_jsonl(tmp_path / "valid.jsonl", [json.loads(
        support_data.read_text(encoding="utf-8").splitlines()[0])])
    lines: list[str] = []
    job = make_job(llama_dir, support_data, tmp_path / "out", model_cache, valid=valid,
                   settings=settings(epochs=1))

    outcome = train(job, say=lines.append)

    assert lines[0].startswith(f"train: 8 dialogues in {support_data}, 8 used, ")
    assert lines[1].startswith(f"validation: 1 dialogues in {valid}, 1 used, ")
    assert outcome.manifest["data"]["valid"]["sha256"] == file_sha256(valid)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_botkit_loss_paths_match_a_plain_full_logits_loss(
    family: str, llama_dir: Path, gpt2_dir: Path, model_cache: Path
) -> None:
    """Selective logits and the shared prefix change the cost, never the loss or gradients."""
    from botkit.training.data import Dialogue, Turn, iter_batches, tokenize_dialogue
    from botkit.training.trainer import Trainer

    loaded = load_tiny(llama_dir if family == "llama" else gpt2_dir, model_cache)
    peft_model = wrap_for_training(loaded.model, settings(), total_steps=10, base_name="tiny")
    peft_model.eval()  # no dropout: the two computations must see the same network
    generator = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.1
    examples = [
        tokenize_dialogue(loaded.tokenizer, Dialogue((Turn("user", q), Turn("assistant", a)), "t"),
                          system_prompt=PERSONA_PROMPT_LONG)
        for q, a in [("How do I reset my password?", "Open the settings page."),
                     ("Hello there", "Hi! I am fine, thank you."),
                     ("When does my order ship?", "In three to five business days.")]
    ]
    pad = loaded.tokenizer.pad_token_id
    ids, mask, labels = next(iter_batches(examples, [[0, 1, 2]], pad))

    def loss_and_grads(**flags: bool) -> tuple[float, torch.Tensor, int]:
        trainer = Trainer(peft_model, settings(**flags), examples, examples[:1], pad_id=pad,
                          device=torch.device("cpu"), progress=False)
        peft_model.zero_grad()
        loss = trainer.loss_sum(ids, mask, labels)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in peft_model.parameters() if p.requires_grad])
        return float(loss), grads, trainer._shared_prefix(ids, mask)

    plain, plain_grads, _ = loss_and_grads(selective_logits=False, share_prefix=False)
    selective, selective_grads, _ = loss_and_grads(selective_logits=True, share_prefix=False)
    shared, shared_grads, prefix = loss_and_grads(selective_logits=True, share_prefix=True)

    assert prefix > 8  # the system prompt and the user-turn header are shared
    assert selective == pytest.approx(plain, rel=1e-5)
    assert shared == pytest.approx(plain, rel=1e-5)
    torch.testing.assert_close(selective_grads, plain_grads, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(shared_grads, plain_grads, atol=1e-4, rtol=1e-3)


PERSONA_PROMPT_LONG = (
    "You are Pine, the Harbor & Pine virtual assistant. Please contact support if the "
    "problem persists."
)


@pytest.mark.gpu
def test_training_runs_on_cuda_in_bf16(
    llama_dir: Path, support_data: Path, model_cache: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    job = make_job(llama_dir, support_data, tmp_path / "out", model_cache,
                   settings=settings(epochs=2))
    job.device = "cuda"

    outcome = train(job, say=lines.append)

    assert outcome.manifest["device"].startswith("cuda")
    assert outcome.manifest["dtype"] == "bfloat16"
    losses = [float(m[3]) for m in epoch_lines(lines)]
    assert len(losses) == 2
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
