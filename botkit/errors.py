"""Every error botkit raises, in one tree.

Errors from the libraries underneath (SQLAlchemy, torch, transformers, peft, platform
SDKs) are re-raised as one of these with ``raise ... from exc`` where they cross into
botkit, so a caller catches botkit errors only and a user reads one sentence that says
what to do.

    BotkitError
    ├── ConfigError                  a config file or BOTKIT_* variable is wrong
    ├── PersonaError                 a persona file is malformed or missing
    │   └── UnknownPersonaError      no persona by that name
    ├── ModelError                   the model cannot be found, loaded or run
    │   └── AdapterError             a LoRA adapter directory is corrupt or mismatched
    ├── GenerationError              generation failed while running
    │   ├── GenerationTimeout        no reply within the configured time
    │   └── GeneratorBusy            the generator refuses more work; retry later
    ├── MemoryStoreError             the conversation database failed
    │   ├── DatabaseUnavailable      the database cannot be reached at all
    │   └── MigrationError           the schema could not be upgraded or downgraded
    ├── InputError                   a user's message cannot be used
    │   ├── EmptyMessageError        nothing left after cleaning
    │   └── MessageTooLongError      over the configured size limit
    ├── AdapterLoadError             a channel adapter failed to import or configure
    └── TrainingError                fine-tuning or evaluation cannot run
        └── DatasetError             a training or evaluation file is malformed or empty
"""

from __future__ import annotations


class BotkitError(Exception):
    """The root of every error botkit raises. ``str(err)`` is meant for a user."""


class ConfigError(BotkitError):
    """A config file or a BOTKIT_* environment variable is invalid."""


class PersonaError(BotkitError):
    """A persona file is malformed; the message names the file and the field."""


class UnknownPersonaError(PersonaError):
    """No persona of that name is loaded."""


class ModelError(BotkitError):
    """The model cannot be found, loaded or run."""


class AdapterError(ModelError):
    """A LoRA adapter directory is corrupt, incomplete or made for another base model."""


class GenerationError(BotkitError):
    """Generation failed while running."""


class GenerationTimeout(GenerationError):
    """No reply (or no next token) arrived within the configured time."""


class GeneratorBusy(GenerationError):
    """The generator is at capacity and refuses new work; retry later."""


class MemoryStoreError(BotkitError):
    """The conversation database failed."""


class DatabaseUnavailable(MemoryStoreError):
    """The database cannot be reached. The message names the host, never the password."""


class MigrationError(MemoryStoreError):
    """An Alembic upgrade or downgrade failed."""


class InputError(BotkitError):
    """A user's message cannot be used as it is."""


class EmptyMessageError(InputError):
    """The message is empty once control characters and whitespace are removed."""


class MessageTooLongError(InputError):
    """The message is longer than the configured limit."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            f"the message is {length} characters long; the limit is {limit}"
        )
        self.length = length
        self.limit = limit


class AdapterLoadError(BotkitError):
    """A channel adapter failed to import, register or validate its config section."""

    def __init__(self, name: str, cause: BaseException | str) -> None:
        super().__init__(f"channel adapter {name!r} could not be loaded: {cause}")
        self.name = name
        self.cause = cause


class TrainingError(BotkitError):
    """``botkit train`` or ``botkit eval`` cannot run (resources, checkpoints, settings)."""


class DatasetError(TrainingError):
    """A training or evaluation file is malformed or empty; the message names file and line."""

