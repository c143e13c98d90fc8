"""The persona editor's drafts: the form's fields and the whole-TOML text, both to TOML.

The editor page has two forms, and a draft is always what one of them holds:

- **the fields** (``mode=fields``): the main fields of the live persona, each in its own
  input. The draft is the live TOML with those fields replaced (a blank field is
  removed, so its default applies) and every other key (``adapter``, ``top_k``,
  ``stop``, ``[memory]``...) kept as it is, written anew by :func:`dump_toml`: keys in
  a fixed order, comments and layout of the file not kept.
- **the whole TOML** (``mode=toml``): the text as typed, published as it is.

Nothing here touches HTTP, the database or the engine; :func:`draft_source` turns what
a form sent into the TOML to validate, preview or publish.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from botkit.persona_versions import DraftError
from botkit.personas import GenerationSettings


@dataclass(frozen=True)
class FormField:
    """One input of the fields form."""

    name: str
    """The input's name, and the key of :class:`DraftError.fields` for it."""
    label: str
    kind: str
    """``line``, ``text`` (a textarea), ``keywords``, ``number`` or ``count``."""
    path: tuple[str, ...]
    """Where it lives in the TOML: ``("system_prompt",)``, ``("generation", "top_p")``."""
    hint: str = ""
    placeholder: str = ""
    rows: int = 0
    required: bool = False
    """Sent as typed even when blank (so that the persona says it must not be)."""


_DEFAULTS = GenerationSettings()

FIELDS: tuple[FormField, ...] = (
    FormField("display_name", "Display name", "line", ("display_name",),
              "What users see. Blank: the persona's name."),
    FormField("greeting", "Greeting", "text", ("greeting",),
              "The first message users see (widget, terminal, Telegram /start).", rows=2),
    FormField("system_prompt", "System prompt", "text", ("system_prompt",),
              "The system message that opens every prompt.", rows=9, required=True),
    FormField("escalation_keywords", "Escalation keywords", "keywords",
              ("escalation_keywords",),
              "Comma-separated words that ask for a person, e.g. agent, human.",
              placeholder="agent, human"),
    FormField("support_hours", "Support hours", "line", ("support_hours",),
              "When people answer. Blank: a request for a person is always queued.",
              placeholder="Mon-Fri 09:00-17:00 Europe/Berlin"),
    FormField("generation.temperature", "Temperature", "number", ("generation", "temperature"),
              "0 is greedy; higher is more varied.", placeholder=str(_DEFAULTS.temperature)),
    FormField("generation.top_p", "Top p", "number", ("generation", "top_p"),
              "Above 0, at most 1.", placeholder=str(_DEFAULTS.top_p)),
    FormField("generation.max_new_tokens", "Max new tokens", "count",
              ("generation", "max_new_tokens"), "The longest reply, in tokens.",
              placeholder=str(_DEFAULTS.max_new_tokens)),
)
FIELD_NAMES = frozenset(f.name for f in FIELDS)
MODES = ("fields", "toml")

# Top-level keys, and [generation]'s, in the order the rebuilt TOML has them; any other
# key follows in the order it had.
_ORDER = ("name", "display_name", "system_prompt", "greeting", "adapter",
          "escalation_keywords", "support_hours", "generation", "memory")
_GENERATION_ORDER = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens",
                     "stop")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?$")
_COUNT = re.compile(r"^\+?\d{1,9}$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}
_INT64 = 2**63


def normalize(text: str) -> str:
    """A browser's textarea value with Unix line ends (forms send CRLF)."""
    return text.replace("\r\n", "\n")


def read_source(source: str) -> dict[str, Any]:
    """The TOML as a dict; a :class:`DraftError` on ``toml`` when it does not parse."""
    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise DraftError({"toml": f"not valid TOML: {exc}"}) from None


def form_values(source: str) -> dict[str, str]:
    """What the fields form shows for a persona's TOML (blank where a key is absent)."""
    raw = read_source(source)
    values: dict[str, str] = {}
    for field in FIELDS:
        value: Any = raw
        for key in field.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            values[field.name] = ""
        elif field.kind == "keywords" and isinstance(value, list):
            values[field.name] = ", ".join(str(v) for v in value)
        elif isinstance(value, bool):
            values[field.name] = "true" if value else "false"
        else:
            values[field.name] = str(value)
    return values


def _field_value(field: FormField, text: str) -> Any:
    """The TOML value of one input, None for a blank one, or ValueError saying why not."""
    if field.kind == "text":
        text = normalize(text)
        return text if text.strip() or field.required else None
    text = text.strip()
    if not text:
        return None
    if field.kind == "keywords":
        words = [word.strip() for word in text.split(",")]
        return [word for word in words if word] or None
    if field.kind == "number":
        if not _NUMBER.fullmatch(text):
            raise ValueError("must be a number, like 0.7")
        number = float(text)
        if not math.isfinite(number):
            raise ValueError("must be a number, like 0.7")
        return number
    if field.kind == "count":
        if not _COUNT.fullmatch(text):
            raise ValueError("must be a whole number, like 256")
        return int(text)
    return text


def source_from_fields(base: str, form: Mapping[str, str]) -> str:
    """``base`` (the live TOML) with the form's fields in place, written anew.

    A field the form did not send keeps its value; a blank one is removed.
    """
    raw = read_source(base)
    errors: dict[str, str] = {}
    for field in FIELDS:
        if field.name not in form:
            continue
        text = form[field.name]
        try:
            text.encode("utf-8")
            value = _field_value(field, text)
        except UnicodeEncodeError:
            errors[field.name] = "is not valid text"
            continue
        except ValueError as exc:
            errors[field.name] = str(exc)
            continue
        table = raw
        for key in field.path[:-1]:
            inner = table.get(key)
            if not isinstance(inner, dict):
                inner = table[key] = {}
            table = inner
        if value is None:
            table.pop(field.path[-1], None)
        else:
            table[field.path[-1]] = value
    if errors:
        raise DraftError(errors)
    generation = raw.get("generation")
    if isinstance(generation, dict):
        if generation:
            raw["generation"] = _ordered(generation, _GENERATION_ORDER)
        else:
            del raw["generation"]
    return dump_toml(_ordered(raw, _ORDER))


def draft_source(form: Mapping[str, Any], base: str) -> str:
    """The TOML that a form (fields or whole TOML, by its ``mode``) drafts over ``base``."""
    mode = form.get("mode")
    if mode == "toml":
        source = form.get("source")
        if not isinstance(source, str):
            raise DraftError({"toml": "the draft has no TOML"})
        try:
            source.encode("utf-8")
        except UnicodeEncodeError:
            raise DraftError({"toml": "the TOML is not valid text"}) from None
        return normalize(source)
    if mode == "fields":
        values = {k: v for k, v in form.items() if k in FIELD_NAMES}
        if not all(isinstance(v, str) for v in values.values()):
            raise DraftError({"toml": "every field of the form must be text"})
        return source_from_fields(base, values)
    raise DraftError({"toml": "the draft must come from the fields or from the whole TOML"})


def split_errors(fields: Mapping[str, str], mode: str) -> tuple[dict[str, str], list[str]]:
    """:class:`DraftError` fields as (errors next to an input, errors at the top).

    From the fields form, an error on one of its inputs goes next to it; any other (the
    TOML, or a key the form does not show) goes to the top. From the whole TOML every
    error goes next to the text, naming its field.
    """
    beside: dict[str, str] = {}
    top: list[str] = []
    for key, message in fields.items():
        if mode == "fields" and key in FIELD_NAMES:
            beside[key] = message.removeprefix(f"{key}: ")
        elif key in ("toml", "missing") or key in message:
            top.append(message)
        else:
            top.append(f"{key}: {message}")
    return beside, top


# -- writing TOML ------------------------------------------------------------------------


def _ordered(table: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    first = {key: table[key] for key in order if key in table}
    return {**first, **{k: v for k, v in table.items() if k not in first}}


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key, multiline=False)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _ESCAPES:
        return _ESCAPES[char]
    if code < 0x20 or code == 0x7F:
        return f"\\u{code:04x}"
    return char


def toml_string(text: str, *, multiline: bool = True) -> str:
    """``text`` as a TOML basic string: one line, or (when it has line breaks and
    ``multiline``) a ``\"\"\"`` string whose lines are the text's own."""
    if not (multiline and "\n" in text):
        return '"' + "".join(_escape(c) for c in text) + '"'
    out: list[str] = []
    last = len(text) - 1
    for index, char in enumerate(text):
        if char in "\n\t":
            out.append(char)
        elif char == '"':
            # A quote never starts a run of three, nor touches the closing delimiter.
            out.append('\\"' if index == last or text[index + 1] == '"' else '"')
        else:
            out.append(_escape(char))
    # The line break right after the opening delimiter is not part of the string.
    return '"""\n' + "".join(out) + '"""'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise DraftError({"toml": f"the number {value} is too large for TOML"})
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise DraftError({"toml": f"cannot write {type(value).__name__} values as TOML"})


def dump_toml(data: Mapping[str, Any]) -> str:
    """``data`` (as :mod:`tomllib` reads it) as TOML: keys first, then ``[tables]``."""
    lines: list[str] = []
    _dump_table(data, (), lines)
    return "\n".join(lines).strip("\n") + "\n"


def _dump_table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    keys = [(k, v) for k, v in table.items() if k not in tables]
    if path and (keys or not tables):
        lines.extend(["", "[" + ".".join(toml_key(p) for p in path) + "]"])
    for key, value in keys:
        lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in tables.items():
        _dump_table(value, (*path, key), lines)


__all__ = [
    "FIELDS",
    "FIELD_NAMES",
    "FormField",
    "MODES",
    "draft_source",
    "dump_toml",
    "form_values",
    "normalize",
    "source_from_fields",
    "split_errors",
    "toml_string",
]
