"""``botkit adapters merge``: fold a LoRA adapter into its base model's weights.

The result is an ordinary model directory (safetensors, config, tokenizer with its
chat template) that any transformers tool, or botkit's ``[model] source``, loads
without peft, at the base model's speed.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from botkit.errors import AdapterError, TrainingError

logger = logging.getLogger(__name__)

MERGE_RECORD = "botkit_merged.json"


def merge_adapter(
    adapter: Path,
    output: Path,
    *,
    base_source: str | None,
    default_source: str,
    cache_dir: Path,
) -> str:
    """Write ``adapter`` merged into its base to ``output``; returns the base model's id."""
    from botkit.model.lora import AdapterSet, validate_adapter_dir

    info = validate_adapter_dir(adapter)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TrainingError(f"--output {output} already exists; choose a new directory")
    manifest = dict(info.manifest or {})
    source = base_source or manifest.get("base_source") or default_source

    from botkit.model.loading import load_model

    loaded = load_model(source, device="cpu", dtype="float32", cache_dir=cache_dir)
    recorded = manifest.get("base_weights_hash")
    if recorded and recorded != loaded.weights_hash:
        raise AdapterError(
            f"adapter in {adapter} was trained on base weights {recorded} "
            f"({manifest.get('base_model', 'unknown model')}), but {source} has weights "
            f"{loaded.weights_hash}; pass the right model with --base"
        )
    adapters = AdapterSet(loaded.model, base_weights_hash=loaded.weights_hash)
    adapters.load("merge", adapter)
    with adapters.use("merge") as peft_model:
        merged = peft_model.merge_and_unload()

    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        merged.save_pretrained(scratch)
        loaded.tokenizer.save_pretrained(scratch)
        record = {
            "base_model": loaded.model_id,
            "base_source": source,
            "base_weights_hash": loaded.weights_hash,
            "adapter": str(adapter.resolve()),
            "adapter_version": info.version,
            "adapter_manifest": manifest,
            "merged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (scratch / MERGE_RECORD).write_text(
            json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n",
            encoding="utf-8",
        )
        scratch.chmod(0o755)
        if output.exists():
            output.rmdir()
        scratch.rename(output)
    except OSError as exc:
        raise TrainingError(f"could not write the merged model to {output}: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("merged adapter %s (%s) into %s", adapter, info.version, loaded.model_id)
    return loaded.model_id
