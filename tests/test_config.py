"""``botkit.config``: the file, the environment on top, and what a user reads when it is wrong."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from botkit.config import Config, describe, load_config
from botkit.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
SECTIONS = ("bot", "model", "memory", "logging", "server")


def write(tmp_path: Path, text: str, name: str = "botkit.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the file ---------------------------------------------------------------------------


def test_no_file_and_no_environment_gives_the_defaults() -> None:
    config = load_config(None, environ={})

    assert config.source == "<defaults>"
    assert config.model.device == "auto"
    assert config.memory.url == "sqlite:///{data_dir}/botkit.db"
    assert config.bot.default_persona == "pine"
    assert dict(config.adapters) == {}


def test_botkit_config_variable_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\ndevice = "cpu"\n')

    config = load_config(None, environ={"BOTKIT_CONFIG": str(path)})

    assert config.source == str(path)
    assert config.model.device == "cpu"


@pytest.mark.parametrize("section", SECTIONS)
def test_example_config_documents_the_defaults_of_every_section(section: str) -> None:
    example = load_config(EXAMPLE, environ={})

    assert getattr(example, section) == getattr(Config(), section)


def test_example_config_sets_every_key_of_every_section() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    defaults = Config()

    for section in SECTIONS:
        assert f"[{section}]" in text
        for field in dataclasses.fields(getattr(defaults, section)):
            assert f"\n{field.name} = " in text, f"[{section}] {field.name} is not documented"


def test_unknown_key_in_a_section_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\nbogus_key = "x"\n')

    with pytest.raises(ConfigError, match="bogus_key") as caught:
        load_config(path, environ={})

    assert "[model]" in str(caught.value)
    assert str(path) in str(caught.value)


def test_unknown_section_is_an_error_naming_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[modle]\ndevice = 'cpu'\n")

    with pytest.raises(ConfigError, match=r"unknown section \[modle\]"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "section", "key"),
    [
        ("[model]\ndevice = 3\n", "model", "device"),
        ("[model]\nthreads = 1.5\n", "model", "threads"),
        ("[memory]\nauto_upgrade = 1\n", "memory", "auto_upgrade"),
        ("[bot]\nmax_message_chars = true\n", "bot", "max_message_chars"),
        ("[bot]\nmax_message_chars = 'lots'\n", "bot", "max_message_chars"),
    ],
)
def test_wrong_type_in_the_file_names_section_and_key(
    tmp_path: Path, text: str, section: str, key: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError, match=rf"\[{section}\] {key}"):
        load_config(path, environ={})


def test_number_written_as_a_string_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\nthreads = "4"\n')

    with pytest.raises(ConfigError, match=r"\[model\] threads"):
        load_config(path, environ={})


def test_integer_in_the_file_is_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\ngeneration_timeout_s = 30\n")

    timeout = load_config(path, environ={}).model.generation_timeout_s

    assert timeout == 30.0
    assert isinstance(timeout, float)


def test_malformed_toml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[model\ndevice = 'cpu'\n")

    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(path, environ={})

    assert str(path) in str(caught.value)


def test_missing_file_says_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"

    with pytest.raises(ConfigError, match="not found") as caught:
        load_config(missing, environ={})

    assert str(missing) in str(caught.value)


def test_section_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, 'model = "small"\n')

    with pytest.raises(ConfigError, match=r"model must be a table"):
        load_config(path, environ={})


def test_value_outside_its_allowed_set_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\ndtype = "float8"\n')

    with pytest.raises(ConfigError, match=r"\[model\] dtype must be"):
        load_config(path, environ={})


def test_adapter_tables_are_kept_for_the_adapters(tmp_path: Path) -> None:
    path = write(tmp_path, "[adapters.terminal]\n\n[adapters.telegram]\npoll_s = 2\n")

    adapters = load_config(path, environ={}).adapters

    assert dict(adapters["telegram"]) == {"poll_s": 2}
    assert "terminal" in adapters


# --- secrets ----------------------------------------------------------------------------


def test_database_password_in_the_file_is_refused_pointing_at_the_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[memory]\npassword = "x-file-secret"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    message = str(caught.value)
    assert "BOTKIT_DATABASE_PASSWORD" in message
    assert "x-file-secret" not in message


def test_telegram_token_in_the_file_is_refused_pointing_at_the_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[adapters.telegram]\ntoken = "123:tg-file-secret"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    message = str(caught.value)
    assert "BOTKIT_TELEGRAM_TOKEN" in message
    assert "tg-file-secret" not in message


def test_secret_section_key_from_the_environment_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="BOTKIT_DATABASE_PASSWORD") as caught:
        load_config(None, environ={"BOTKIT_MEMORY__PASSWORD": "env-secret"})

    assert "env-secret" not in str(caught.value)


def test_secret_variables_are_not_mistaken_for_overrides() -> None:
    environ = {
        "BOTKIT_DATABASE_PASSWORD": "pw",
        "BOTKIT_TELEGRAM_TOKEN": "tg",
        "BOTKIT_DISCORD_TOKEN": "dc",
    }

    assert load_config(None, environ=environ).model == Config().model


# --- the environment --------------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\ndevice = "cuda"\nsource = "local-model"\n')

    config = load_config(path, environ={"BOTKIT_MODEL__DEVICE": "cpu"})

    assert config.model.device == "cpu"
    assert config.model.source == "local-model"


@pytest.mark.parametrize(
    ("variable", "value", "section", "key", "expected"),
    [
        ("BOTKIT_MEMORY__AUTO_UPGRADE", "no", "memory", "auto_upgrade", False),
        ("BOTKIT_MEMORY__AUTO_UPGRADE", "False", "memory", "auto_upgrade", False),
        ("BOTKIT_MEMORY__AUTO_UPGRADE", "1", "memory", "auto_upgrade", True),
        ("BOTKIT_MEMORY__BUSY_TIMEOUT_MS", "250", "memory", "busy_timeout_ms", 250),
        ("BOTKIT_MODEL__THREADS", " 4 ", "model", "threads", 4),
        ("BOTKIT_MODEL__GENERATION_TIMEOUT_S", "2.5", "model", "generation_timeout_s", 2.5),
        ("BOTKIT_BOT__DATA_DIR", "/srv/botkit", "bot", "data_dir", "/srv/botkit"),
    ],
)
def test_environment_strings_are_converted_to_the_field_type(
    variable: str, value: str, section: str, key: str, expected: object
) -> None:
    config = load_config(None, environ={variable: value})

    got = getattr(getattr(config, section), key)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("variable", "value", "section_key"),
    [
        ("BOTKIT_MODEL__THREADS", "many", "[model] threads"),
        ("BOTKIT_MEMORY__AUTO_UPGRADE", "maybe", "[memory] auto_upgrade"),
        ("BOTKIT_MODEL__GENERATION_TIMEOUT_S", "soon", "[model] generation_timeout_s"),
    ],
)
def test_bad_environment_value_is_an_error_naming_the_key(
    variable: str, value: str, section_key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={variable: value})

    assert section_key in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("variable", ["BOTKIT_FOO__BAR", "BOTKIT_MODELDEVICE"])
def test_unknown_environment_variable_is_an_error_naming_it(variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config(None, environ={variable: "x"})


def test_unrelated_environment_variables_are_ignored() -> None:
    config = load_config(None, environ={"HOME": "/root", "MODEL__DEVICE": "cpu"})

    assert config.model.device == "auto"


# --- derived values and describe() ------------------------------------------------------


def test_database_url_fills_in_the_data_dir() -> None:
    config = load_config(None, environ={"BOTKIT_BOT__DATA_DIR": "/srv/botkit"})

    assert config.database_url == "sqlite:////srv/botkit/botkit.db"


def test_database_url_without_placeholder_is_used_as_it_is() -> None:
    url = "postgresql://bot@db.internal/botkit"

    config = load_config(None, environ={"BOTKIT_MEMORY__URL": url})

    assert config.database_url == url


def test_describe_shows_secrets_only_as_set_or_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_DATABASE_PASSWORD", "hunter2")
    monkeypatch.delenv("BOTKIT_TELEGRAM_TOKEN", raising=False)
    config = load_config(
        None,
        environ={
            "BOTKIT_DATABASE_PASSWORD": "hunter2",
            "BOTKIT_MEMORY__URL": "postgresql://bot@127.0.0.1:5432/botkit",
        },
    )

    rows = dict(describe(config))

    assert rows["database_password"] == "set (BOTKIT_DATABASE_PASSWORD)"
    assert rows["telegram_token"] == "unset (BOTKIT_TELEGRAM_TOKEN)"
    assert "hunter2" not in repr(describe(config))
    assert config.secret("database_password") == "hunter2"


def test_describe_lists_every_key_and_the_resolved_database() -> None:
    config = load_config(None, environ={"BOTKIT_BOT__DATA_DIR": "/srv/botkit"})

    rows = dict(describe(config))

    for section in SECTIONS:
        for field in dataclasses.fields(getattr(config, section)):
            assert f"{section}.{field.name}" in rows
    assert rows["model.device"] == "'auto'"
    assert rows["memory (resolved)"] == "sqlite:////srv/botkit/botkit.db"


def test_server_lists_come_from_toml_lists_or_comma_separated_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[server]\nallowed_origins = ["https://shop.example"]\nport = 9000\n')

    from_file = load_config(path, environ={})
    from_env = load_config(path, environ={
        "BOTKIT_SERVER__ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "BOTKIT_SERVER__ADAPTERS": "web,telegram",
    })

    assert from_file.server.allowed_origins == ("https://shop.example",)
    assert from_file.server.port == 9000
    assert from_env.server.allowed_origins == ("https://a.example", "https://b.example")
    assert from_env.server.adapters == ("web", "telegram")


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nport = 70000\n", "port"),
    ("[server]\nmax_body_bytes = 10\n", "max_body_bytes"),
    ('[server]\nallowed_origins = ["shop.example"]\n', "allowed_origins"),
    ('[logging]\nformat = "xml"\n', "format"),
])
def test_bad_server_settings_are_refused_by_name(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), environ={})
