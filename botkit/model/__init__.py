"""The model layer: loading (HF dir, hub id, GGUF), device and dtype, LoRA adapters, and
the in-process generator.

Importing this package imports torch; the engine reaches it only through the
:class:`botkit.generation.Generator` seam.
"""

from botkit.model.device import choose_device, choose_dtype, cpu_has_native_bf16
from botkit.model.loading import LoadedModel, load_model
from botkit.model.local import FinishInfo, LocalGenerator
from botkit.model.lora import AdapterInfo, AdapterSet, validate_adapter_dir

__all__ = [
    "AdapterInfo",
    "AdapterSet",
    "FinishInfo",
    "LoadedModel",
    "LocalGenerator",
    "choose_device",
    "choose_dtype",
    "cpu_has_native_bf16",
    "load_model",
    "validate_adapter_dir",
]
