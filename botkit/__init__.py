"""botkit: a chat bot framework whose brain is a LoRA-fine-tuned causal language model.

The public surface is what ``__all__`` lists; everything else may change. Importing
botkit does not import torch: the model is loaded only when a generator is built.
"""

__version__ = "0.1.0"

from botkit.adapters import Adapter
from botkit.config import Config, load_config
from botkit.engine import DialogueEngine, IncomingMessage, Reply
from botkit.errors import (
    AdapterError,
    AdapterLoadError,
    BotkitError,
    ConfigError,
    DatabaseUnavailable,
    DatasetError,
    EmptyMessageError,
    GenerationError,
    GenerationTimeout,
    GeneratorBusy,
    InputError,
    MemoryStoreError,
    MessageTooLongError,
    MigrationError,
    ModelError,
    PersonaError,
    TrainingError,
    UnknownPersonaError,
)
from botkit.generation import ChatMessage, GenerationRequest, Generator, SamplingParams
from botkit.memory import ConversationStore
from botkit.personas import Persona, PersonaRegistry

__all__ = [
    "Adapter",
    "AdapterError",
    "AdapterLoadError",
    "BotkitError",
    "ChatMessage",
    "Config",
    "ConfigError",
    "ConversationStore",
    "DatabaseUnavailable",
    "DatasetError",
    "DialogueEngine",
    "EmptyMessageError",
    "GenerationError",
    "GenerationRequest",
    "GenerationTimeout",
    "Generator",
    "GeneratorBusy",
    "IncomingMessage",
    "InputError",
    "MemoryStoreError",
    "MessageTooLongError",
    "MigrationError",
    "ModelError",
    "Persona",
    "PersonaError",
    "PersonaRegistry",
    "Reply",
    "SamplingParams",
    "TrainingError",
    "UnknownPersonaError",
    "__version__",
    "load_config",
]
