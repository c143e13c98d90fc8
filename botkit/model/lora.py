"""LoRA adapters: several per process, one per persona, over one base model.

An adapter directory is what ``peft``'s ``save_pretrained`` writes
(``adapter_config.json`` and ``adapter_model.safetensors`` or ``.bin``), plus an
optional ``botkit_manifest.json`` that ``botkit train`` writes beside them::

    {"base_model": "SmolLM2-135M-Instruct", "base_weights_hash": "3f2a...",
     "chat_template": "...", "hyperparameters": {...}, ...}

A directory is checked before peft sees it (:func:`validate_adapter_dir`), and its
tensor shapes are checked against the base model, so a wrong or corrupt adapter is an
:class:`~botkit.errors.AdapterError` that names the directory, never a torch traceback,
and never leaves the adapters loaded before it unusable.

:class:`AdapterSet` is not thread-safe: one thread (the model worker) owns it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from botkit.errors import AdapterError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
MANIFEST = "botkit_manifest.json"
#: Prefix of every key in a saved peft state dict, before the base model's module path.
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class AdapterInfo:
    """A checked adapter directory."""

    path: Path
    version: str
    """Short hash of the adapter weights file: changes whenever the weights do."""
    base_model: str | None
    """``base_model_name_or_path`` from ``adapter_config.json``, as peft recorded it."""
    manifest: Mapping[str, Any] | None
    """``botkit_manifest.json``, when the directory has one."""


def validate_adapter_dir(
    path: str | Path, *, base_weights_hash: str | None = None
) -> AdapterInfo:
    """Check that ``path`` holds a complete, readable LoRA adapter.

    With ``base_weights_hash``, an adapter whose manifest names other base weights is
    refused too.
    """
    return _inspect_adapter_dir(path, base_weights_hash=base_weights_hash)[0]


def _inspect_adapter_dir(
    path: str | Path, *, base_weights_hash: str | None
) -> tuple[AdapterInfo, dict[str, torch.Tensor]]:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise AdapterError(f"adapter directory not found: {directory}")

    config = _read_json(directory / ADAPTER_CONFIG, directory, required=True)
    if not isinstance(config, dict) or "peft_type" not in config:
        raise AdapterError(f"{directory / ADAPTER_CONFIG} is not a peft adapter config")
    if str(config["peft_type"]).upper() != "LORA":
        raise AdapterError(
            f"adapter in {directory} is a {config['peft_type']} adapter; botkit loads LoRA only"
        )

    weights = next((directory / n for n in WEIGHT_FILES if (directory / n).is_file()), None)
    if weights is None:
        raise AdapterError(
            f"adapter directory {directory} has no weights ({' or '.join(WEIGHT_FILES)})"
        )
    tensors = _read_weights(weights, directory)  # reads every byte: truncation fails here

    manifest = _read_json(directory / MANIFEST, directory, required=False)
    if manifest is not None and not isinstance(manifest, dict):
        raise AdapterError(f"{directory / MANIFEST} must hold a JSON object")
    if manifest is not None and base_weights_hash is not None:
        recorded = manifest.get("base_weights_hash")
        if recorded and recorded != base_weights_hash:
            raise AdapterError(
                f"adapter in {directory} was trained on base weights {recorded} "
                f"({manifest.get('base_model', 'unknown model')}), but the loaded model's "
                f"weights are {base_weights_hash}; retrain it or load its base model"
            )

    info = AdapterInfo(
        path=directory,
        version=_file_hash(weights),
        base_model=config.get("base_model_name_or_path"),
        manifest=manifest,
    )
    return info, tensors


class AdapterSet:
    """The base model plus the LoRA adapters loaded over it, by name.

    The first adapter wraps the base model in a ``PeftModel`` (in place: the LoRA layers
    are injected into the base model's modules); later ones are added beside it.
    :meth:`use` picks the adapter (or none) for one forward pass at a time.
    """

    def __init__(self, model: Any, *, base_weights_hash: str | None = None) -> None:
        self._base = model
        self._peft: Any = None  # a peft.PeftModel once the first adapter is loaded
        self._base_weights_hash = base_weights_hash
        self._loaded: dict[str, AdapterInfo] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    def info(self, name: str) -> AdapterInfo:
        return self._loaded[self._known(name)]

    def load(self, name: str, path: str | Path) -> str:
        """Load the adapter at ``path`` under ``name``; returns its version.

        Loading a new version under a name already in use replaces the old one once the
        new one has passed every check.
        """
        info, tensors = _inspect_adapter_dir(path, base_weights_hash=self._base_weights_hash)
        self._check_shapes(info.path, tensors)
        if name in self._loaded:
            if self._loaded[name].version == info.version:
                return info.version
            self.unload(name)
        try:
            if self._peft is None:
                self._wrap(name, info.path)
            else:
                self._peft.load_adapter(
                    str(info.path), adapter_name=_peft_name(name), is_trainable=False
                )
        except AdapterError:
            raise
        except Exception as exc:  # peft and torch raise many types; all mean "not loadable"
            raise AdapterError(f"could not load the adapter in {info.path}: {exc}") from exc
        self._loaded[name] = info
        logger.info("loaded adapter %r version %s from %s", name, info.version, info.path)
        return info.version

    def unload(self, name: str) -> None:
        """Forget the adapter ``name``; the last one unloaded gives back the bare base model."""
        self._known(name)
        del self._loaded[name]
        if not self._loaded:
            self._peft.unload()  # removes the LoRA layers without merging them
            self._peft = None
            _strip_lora_layers(self._base)
        else:
            with warnings.catch_warnings():
                # peft warns when the deleted adapter was the active one; use() picks
                # the adapter for every request anyway.
                warnings.filterwarnings("ignore", message=".*was active which is now deleted")
                self._peft.delete_adapter(_peft_name(name))
        logger.info("unloaded adapter %r", name)

    @contextlib.contextmanager
    def use(self, name: str | None) -> Iterator[Any]:
        """Yield the module to run with adapter ``name`` active (``None``: the base model)."""
        if self._peft is None:
            if name is not None:
                self._known(name)
            yield self._base
        elif name is None:
            with self._peft.disable_adapter():
                yield self._peft
        else:
            self._known(name)
            self._peft.set_adapter(_peft_name(name))
            yield self._peft

    # -- internals -----------------------------------------------------------------

    def _known(self, name: str) -> str:
        if name not in self._loaded:
            loaded = ", ".join(sorted(self._loaded)) or "none"
            raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {loaded})")
        return name

    def _wrap(self, name: str, path: Path) -> None:
        from peft import PeftModel

        try:
            self._peft = PeftModel.from_pretrained(
                self._base, str(path), adapter_name=_peft_name(name), is_trainable=False
            )
        except Exception:
            # from_pretrained injects LoRA layers into the base model before loading the
            # weights; take them out again so the base model stays as it was.
            _strip_lora_layers(self._base)
            raise

    def _check_shapes(self, directory: Path, tensors: Mapping[str, torch.Tensor]) -> None:
        """Refuse an adapter whose LoRA tensors do not fit the base model's modules."""
        for key, tensor in tensors.items():
            module_path, _, tail = key.removeprefix(_PEFT_PREFIX).rpartition(".lora_")
            if not module_path or tail not in {"A.weight", "B.weight"}:
                continue
            try:
                module = self._base.get_submodule(module_path)
            except AttributeError:
                raise AdapterError(
                    f"adapter in {directory} targets {module_path}, which the base model "
                    "does not have; it was made for another model"
                ) from None
            module = getattr(module, "base_layer", module)
            expected = _lora_dims(module)
            if expected is None:
                continue
            in_features, out_features = expected
            actual = tuple(tensor.shape)
            fits = (
                actual[1] == in_features if tail == "A.weight" else actual[0] == out_features
            )
            if len(actual) != 2 or not fits:
                raise AdapterError(
                    f"adapter in {directory} does not fit the base model: {key} has shape "
                    f"{list(actual)} but {module_path} maps {in_features} -> {out_features} "
                    "features; it was made for another model"
                )


def _peft_name(name: str) -> str:
    """The name peft keeps an adapter under.

    peft stores adapters in ``torch.nn.ModuleDict``s, which refuse keys that are
    attributes of a module (``eval``, ``train``, ``forward``...); a prefix keeps every
    persona name usable.
    """
    return f"botkit_{name}"


def _lora_dims(module: Any) -> tuple[int, int] | None:
    """(in_features, out_features) of a module LoRA can wrap, or None when unknown."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # GPT-2's transposed linear
        return int(module.weight.shape[0]), int(module.nf)
    return None


def _strip_lora_layers(model: Any) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module_path, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and module_path:
            parent_path, _, child = module_path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def _read_json(path: Path, directory: Path, *, required: bool) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise AdapterError(f"adapter directory {directory} has no {path.name}") from None
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterError(f"{path} in adapter directory {directory} is unreadable: {exc}") from exc


def _read_weights(weights: Path, directory: Path) -> dict[str, torch.Tensor]:
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(weights))
        else:
            tensors = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip all raise their own types
        raise AdapterError(
            f"the weights file {weights.name} in adapter directory {directory} is corrupt "
            f"or truncated: {exc}"
        ) from exc
    if not isinstance(tensors, dict) or not tensors:
        raise AdapterError(f"the weights file {weights.name} in {directory} holds no tensors")
    return tensors


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]
