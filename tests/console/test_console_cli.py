"""``botkit console add-user`` and ``botkit console passwd``: accounts made on the command line."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from botkit.cli import main
from botkit.console.auth import verify_password
from botkit.memory import ConsoleUserRecord, ConversationStore
from tests.console.helpers import client_for, try_login
from tests.live_server import LiveServer

PASSWORD = "a long enough secret"


@pytest.fixture(autouse=True)
def _no_botkit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("BOTKIT_"):
            monkeypatch.delenv(var)


def write_config(folder: Path, db_url: str) -> Path:
    path = folder / "botkit.toml"
    path.write_text(f'[bot]\ndata_dir = "{folder / "data"}"\n\n[memory]\nurl = "{db_url}"\n',
                    encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, f"sqlite:///{tmp_path / 'console.db'}")


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def account(config: Path, username: str) -> ConsoleUserRecord | None:
    url = tomllib.loads(config.read_text())["memory"]["url"]

    async def read() -> ConsoleUserRecord | None:
        async with await ConversationStore.open(url) as store:
            return await store.console_user(username=username)

    return asyncio.run(read())


def test_add_user_with_password_stdin_makes_an_account_that_can_log_in(
    make_web_server: Callable[..., LiveServer], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    server = make_web_server()
    config = write_config(tmp_path, server.db_url)
    stdin(monkeypatch, PASSWORD + "\n")

    code = main(["console", "add-user", "bea", "--role", "agent", "--display-name", "Bea",
                 "--password-stdin", "--config", str(config)])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "created the console agent 'bea' (Bea)" in out
    assert PASSWORD not in out + err
    with client_for(server) as client:
        assert try_login(client, "bea", PASSWORD).status_code == 303
        assert client.get("/console/api/me").json()["name"] == "Bea"


def test_the_stored_hash_is_scrypt_and_never_the_password(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, PASSWORD + "\r\n")

    assert main(["console", "add-user", "olga", "--role", "operator", "--password-stdin",
                 "--config", str(config)]) == 0

    user = account(config, "olga")
    assert user is not None
    assert user.role == "operator"
    assert user.display_name is None
    assert user.password_hash.startswith("scrypt$16384$8$1$")
    assert PASSWORD not in user.password_hash
    assert verify_password(PASSWORD, user.password_hash)


@pytest.mark.parametrize(("text", "message"), [
    ("short\n", "at least 10 characters"),
    ("\n", "no password on standard input"),
    ("", "no password on standard input"),
])
def test_a_short_or_missing_password_is_refused(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    text: str, message: str,
) -> None:
    stdin(monkeypatch, text)

    code = main(["console", "add-user", "bea", "--role", "agent", "--password-stdin",
                 "--config", str(config)])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("botkit: error: ")
    assert message in err
    assert not (config.parent / "console.db").exists() or account(config, "bea") is None


def test_without_a_terminal_or_password_stdin_nothing_is_asked(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, PASSWORD + "\n")

    code = main(["console", "add-user", "bea", "--role", "agent", "--config", str(config)])

    assert code == 1
    assert "--password-stdin" in capsys.readouterr().err


def test_the_password_is_asked_twice_and_must_match(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    typed = iter([PASSWORD, PASSWORD + "!", PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))

    differ = main(["console", "add-user", "bea", "--role", "agent", "--config", str(config)])
    assert differ == 1
    assert "the two passwords differ" in capsys.readouterr().err

    same = main(["console", "add-user", "bea", "--role", "agent", "--config", str(config)])
    assert same == 0
    user = account(config, "bea")
    assert user is not None
    assert verify_password(PASSWORD, user.password_hash)


def test_a_taken_username_or_a_bad_one_is_an_error(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, PASSWORD + "\n")
    assert main(["console", "add-user", "bea", "--role", "agent", "--password-stdin",
                 "--config", str(config)]) == 0
    capsys.readouterr()

    stdin(monkeypatch, PASSWORD + "\n")
    assert main(["console", "add-user", "bea", "--role", "operator", "--password-stdin",
                 "--config", str(config)]) == 1
    assert "exists already" in capsys.readouterr().err

    stdin(monkeypatch, PASSWORD + "\n")
    assert main(["console", "add-user", "bad name", "--role", "agent", "--password-stdin",
                 "--config", str(config)]) == 1
    assert "must be 1 to 64 letters" in capsys.readouterr().err


def test_passwd_changes_the_password(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, PASSWORD + "\n")
    assert main(["console", "add-user", "bea", "--role", "agent", "--password-stdin",
                 "--config", str(config)]) == 0
    stdin(monkeypatch, "another long secret\n")

    code = main(["console", "passwd", "bea", "--password-stdin", "--config", str(config)])

    assert code == 0
    assert "changed the password of 'bea'" in capsys.readouterr().out
    user = account(config, "bea")
    assert user is not None
    assert verify_password("another long secret", user.password_hash)
    assert not verify_password(PASSWORD, user.password_hash)

    stdin(monkeypatch, "another long secret\n")
    assert main(["console", "passwd", "nobody", "--password-stdin", "--config",
                 str(config)]) == 1
    assert "there is no console user 'nobody'" in capsys.readouterr().err
