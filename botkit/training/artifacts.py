"""What training leaves on disk: adapters with manifests, checkpoints, metrics, the plot.

Layout of an output directory::

    OUT/
      adapter_config.json, adapter_model.safetensors   the best epoch's LoRA adapter
      botkit_manifest.json                             base model, data, settings, metrics
      metrics.json                                     loss per epoch and run figures
      loss_curve.png                                   train and validation loss per epoch
      checkpoints/epoch-003/                           the last epoch, for --resume

Every file is written to a temporary name and renamed into place, so an interrupted
run (Ctrl-C, a full disk) never leaves a half-written adapter or checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from botkit.errors import TrainingError
from botkit.model.lora import MANIFEST

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"
METRICS = "metrics.json"
PLOT = "loss_curve.png"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lora_state(peft_model: Any, method: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config, tensors) of the trained adapter as a plain LoRA adapter.

    AdaLoRA trains ``B @ (A * E)`` scaled by ``alpha / rank``; folding ``E`` into ``A``
    and the scale into ``B`` gives the same update as an ordinary LoRA adapter with
    ``lora_alpha == r``, so the serving runtime (and any LoRA server such as vLLM)
    loads either kind the same way.
    """
    from peft import get_peft_model_state_dict

    config = peft_model.peft_config["default"]
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in get_peft_model_state_dict(peft_model, save_embedding_layers=False).items()
    }
    config_dict = config.to_dict()
    if method != "adalora":
        return _jsonable_config(config_dict), tensors

    from peft.tuners.adalora.layer import AdaLoraLayer

    converted: dict[str, torch.Tensor] = {}
    rank = int(config.init_r)
    for name, module in peft_model.named_modules():
        if not isinstance(module, AdaLoraLayer) or "default" not in module.lora_A:
            continue
        key = name.removeprefix("base_model.model.")
        lora_a = module.lora_A["default"].detach().float()  # type: ignore[operator]  # (r, in)
        lora_e = module.lora_E["default"].detach().float()  # type: ignore[operator]  # (r, 1)
        lora_b = module.lora_B["default"].detach().float()  # type: ignore[operator]  # (out, r)
        scale = float(module.scaling["default"]) / (float(module.ranknum["default"]) + 1e-5)
        converted[f"base_model.model.{key}.lora_A.weight"] = (lora_a * lora_e).contiguous()
        converted[f"base_model.model.{key}.lora_B.weight"] = (lora_b * scale).contiguous()
    if not converted:
        raise TrainingError("the AdaLoRA model has no adapted layers to save")
    lora_config = {
        "peft_type": "LORA",
        "task_type": config_dict.get("task_type"),
        "base_model_name_or_path": config_dict.get("base_model_name_or_path"),
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "target_modules": sorted(_as_list(config_dict.get("target_modules"))),
        "bias": "none",
        "fan_in_fan_out": bool(config_dict.get("fan_in_fan_out", False)),
        "inference_mode": True,
    }
    return lora_config, converted


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _jsonable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, set | frozenset | tuple):
            value = sorted(value) if all(isinstance(v, str) for v in value) else list(value)
        out[key] = value
    out["inference_mode"] = True
    return out


def save_adapter(
    directory: Path,
    adapter_config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    manifest: Mapping[str, Any] | None,
) -> None:
    """Write a loadable adapter directory; files replace earlier ones atomically."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".adapter_model.", dir=directory)
    os.close(fd)
    try:
        save_file(dict(tensors), tmp, metadata={"format": "pt"})
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / "adapter_model.safetensors")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_json_atomic(directory / "adapter_config.json", dict(adapter_config))
    if manifest is not None:
        write_json_atomic(directory / MANIFEST, dict(manifest))


# -- checkpoints -----------------------------------------------------------------------


def save_checkpoint(
    out: Path,
    epoch: int,
    *,
    peft_model: Any,
    optimizer: Any,
    scheduler: Any,
    state: Mapping[str, Any],
) -> Path:
    """Everything ``--resume`` needs after ``epoch``; older checkpoints are removed."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:03d}"
    scratch = Path(tempfile.mkdtemp(prefix=f".epoch-{epoch:03d}.", dir=root))
    try:
        tensors = {
            k: v.detach().to("cpu").contiguous()
            for k, v in get_peft_model_state_dict(peft_model, save_embedding_layers=False).items()
        }
        save_file(tensors, str(scratch / "adapter_model.safetensors"))
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            scratch / "optimizer.pt",
        )
        write_json_atomic(scratch / TRAINER_STATE, dict(state))
        if final.exists():
            shutil.rmtree(final)
        scratch.rename(final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    for older in root.glob("epoch-*"):
        if older != final and older.is_dir():
            shutil.rmtree(older, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint under ``out``, if any."""
    root = out / CHECKPOINTS
    found = sorted(
        p for p in root.glob("epoch-*") if p.is_dir() and (p / TRAINER_STATE).is_file()
    )
    return found[-1] if found else None


def load_checkpoint(checkpoint: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any]:
    """(trainer state, adapter tensors, optimizer/scheduler/RNG states)."""
    from safetensors.torch import load_file

    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(checkpoint / "adapter_model.safetensors"))
        extra = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=False)
    except Exception as exc:  # json, safetensors and pickle each raise their own types
        raise TrainingError(f"the checkpoint in {checkpoint} is unreadable: {exc}") from exc
    return state, tensors, extra


# -- metrics and the plot ---------------------------------------------------------------


def plot_losses(history: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path | None:
    """Train and validation loss per epoch as a PNG; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    axes.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    axes.plot(epochs, [row["val_loss"] for row in history], marker="o", label="validation")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss (per assistant token)")
    axes.set_title(title)
    axes.set_xticks(epochs)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        figure.savefig(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        Path(tmp).unlink(missing_ok=True)
    return path
