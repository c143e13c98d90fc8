"""``botkit`` on the command line: what a user sees on stdout and stderr, and exit codes.

Most tests call ``botkit.cli.main`` in-process; a few run the installed ``botkit``
script to check real exit codes and stderr. Every test runs in its own folder with its
own ``data/``, so nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

import botkit
from botkit.cli import build_parser, main
from botkit.errors import ConfigError
from botkit.testing import ScriptedGenerator

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "config.example.toml"
BOTKIT_SCRIPT = Path(sys.executable).with_name("botkit")
USER = "alice"
QUESTION = "How do I reset my password?"
ANSWER = "Use Forgot password? on the sign-in page."


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean folder holding a copy of ``personas/``, with ``data/`` inside it."""
    for var in list(os.environ):
        if var.startswith("BOTKIT_"):
            monkeypatch.delenv(var)
    shutil.copytree(REPO / "personas", tmp_path / "personas")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOTKIT_BOT__DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def terminal_user(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("botkit.terminal._os_user", lambda: USER)
    return USER


@pytest.fixture
def generator(monkeypatch: pytest.MonkeyPatch) -> ScriptedGenerator:
    """Replaces the real model for ``botkit chat``; script replies in ``.replies``."""
    scripted = ScriptedGenerator([ANSWER])

    async def load_generator(config: object) -> ScriptedGenerator:
        return scripted

    monkeypatch.setattr("botkit.app.load_generator", load_generator)
    return scripted


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """A non-TTY stdin; write lines into it before calling ``main``."""
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stdin", fake)
    return fake


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_script(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BOTKIT_")}
    environ["BOTKIT_BOT__DATA_DIR"] = str(cwd / "data")
    environ.update(env)
    return subprocess.run(
        [str(BOTKIT_SCRIPT), *argv],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )


def assert_one_line_error(err: str, *expected: str) -> None:
    assert err.startswith("botkit: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err


def write_bad_config(folder: Path) -> Path:
    path = folder / "bad.toml"
    path.write_text('[model]\nbogus_key = "x"\n', encoding="utf-8")
    return path


# --- version and help -------------------------------------------------------------------

HELP_CASES = {
    (): "chat bots whose brain is a LoRA-fine-tuned language model",
    ("bench",): "benchmarks",
    ("bench", "serve"): "serving throughput and latency, botkit vs transformers",
    ("chat",): "chat with a persona in the terminal",
    ("config",): "config files",
    ("config", "check"): "validate a config and print what would run",
    ("persona",): "persona files",
    ("persona", "list"): "list the personas of a folder",
    ("persona", "validate"): "validate persona files (default: every file of the folder)",
    ("db",): "Alembic migrations of the conversation database",
    ("db", "upgrade"): "upgrade the schema (default: to head)",
    ("db", "downgrade"): "downgrade the schema (default: to base, dropping every table)",
    ("db", "current"): "print the schema revision",
    ("memory",): "what botkit remembers about a user",
    ("memory", "export"): "print everything stored about a user as JSON",
    ("memory", "forget"): "delete everything stored about a user, in every table",
    ("adapters",): "LoRA adapters (the model's fine-tunings) and channel adapters",
    ("adapters", "list"): "list the LoRA adapters (personas' and under data/adapters) and the "
    "installed channel adapters",
    ("adapters", "merge"): "merge a LoRA adapter into its base model",
    ("bench", "train"): "training throughput, botkit's loop vs a plain padded loop",
    ("bench", "web"): "the web widget under load: N concurrent users over HTTP and SSE",
    ("persona", "export"): "write the newest persona versions published from the console",
    ("persona", "history"): "list a persona's published versions: when, who, why",
    ("serve",): "serve the web widget, the OpenAI-compatible API, health and metrics over HTTP",
    ("train",): "fine-tune a LoRA adapter on chat dialogues (JSONL)",
    ("eval",): "ask a persona a question file and report its accuracy, base model vs adapter",
    ("data",): "training data",
    ("data", "export"): "export dialogues for training as JSONL",
    ("console",): "accounts of the web console at /console, for support agents and operators",
    ("console", "add-user"): "create a console account (the password is asked twice, or read "
    "from stdin with --password-stdin)",
    ("console", "passwd"): "set a console account's password (its open sessions end)",
}


def test_version_prints_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"botkit {botkit.__version__}\n"
    assert botkit.__version__ == version("botkit")


@pytest.mark.parametrize("command", list(HELP_CASES), ids=lambda c: " ".join(c) or "botkit")
def test_help_of_every_command_exits_0_and_describes_it(
    capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert exited.value.code == 0
    assert out.startswith(" ".join(("usage: botkit", *command)))
    assert HELP_CASES[command] in out


def test_help_cases_cover_every_command_the_parser_has() -> None:
    def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> Iterator[tuple]:
        yield prefix
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, (*prefix, name))

    assert set(commands(build_parser(), ())) == set(HELP_CASES)


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])

    assert exited.value.code == 2
    assert "usage: botkit" in capsys.readouterr().err


# --- config check -----------------------------------------------------------------------


def test_config_check_of_the_example_prints_config_ok_and_the_personas(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "config", "check", "--config", str(EXAMPLE_CONFIG))

    lines = out.splitlines()
    assert code == 0, err
    assert lines[-1] == "config OK"
    assert lines[-2].split() == ["personas", "pine"]
    assert str(EXAMPLE_CONFIG) in lines[0]
    assert any(line.split() == ["model.device", "'auto'"] for line in lines)
    assert f"sqlite:///{workdir / 'data'}/botkit.db" in out
    assert not (workdir / "data").exists()


def test_config_check_with_an_unknown_key_exits_1_with_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_bad_config(workdir)

    code, out, err = cli(capsys, "config", "check", "--config", str(bad))

    assert code == 1
    assert out == ""
    assert_one_line_error(err, "bogus_key", str(bad))


def test_config_check_with_an_unknown_default_persona_names_it(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTKIT_BOT__DEFAULT_PERSONA", "fern")

    code, _, err = cli(capsys, "config", "check")

    assert code == 1
    assert_one_line_error(err, "unknown persona 'fern'", "known: pine")


def test_debug_shows_the_traceback_instead_of_one_line(workdir: Path) -> None:
    bad = write_bad_config(workdir)

    with pytest.raises(ConfigError, match="bogus_key"):
        main(["--debug", "config", "check", "--config", str(bad)])


def test_installed_script_reports_a_config_error_in_one_line_and_exit_1(workdir: Path) -> None:
    bad = write_bad_config(workdir)

    done = run_script("config", "check", "--config", str(bad), cwd=workdir)

    assert done.returncode == 1
    assert done.stdout == ""
    assert_one_line_error(done.stderr, "bogus_key")


def test_installed_script_with_debug_prints_the_traceback(workdir: Path) -> None:
    bad = write_bad_config(workdir)

    done = run_script("--debug", "config", "check", "--config", str(bad), cwd=workdir)

    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ConfigError" in done.stderr
    assert "bogus_key" in done.stderr


def test_installed_script_config_check_passes_on_the_example(workdir: Path) -> None:
    done = run_script("config", "check", "--config", str(EXAMPLE_CONFIG), cwd=workdir)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "config OK"


# --- personas and adapters --------------------------------------------------------------


def test_persona_validate_a_good_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "persona", "validate", "personas/pine.toml")

    assert code == 0
    assert out == "personas/pine.toml: OK (pine)\n"


def test_persona_validate_the_configured_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "persona", "validate")

    assert code == 0
    assert out.splitlines() == ["personas/pine.toml: OK (pine)", "1 persona(s) valid"]


def test_persona_validate_a_broken_file_exits_1_naming_file_and_field(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = workdir / "personas" / "broken.toml"
    broken.write_text('name = "broken"\nsystem_prompt = "x"\n[generation]\ntop_p = 1.5\n',
                      encoding="utf-8")

    code, out, err = cli(capsys, "persona", "validate", str(broken))

    assert code == 1
    assert out == ""
    assert_one_line_error(err, str(broken), "top_p")


def test_installed_script_persona_validate_broken_file_exits_1(workdir: Path) -> None:
    broken = workdir / "broken.toml"
    broken.write_text('name = "broken"\n', encoding="utf-8")

    done = run_script("persona", "validate", "personas/pine.toml", str(broken), cwd=workdir)

    assert done.returncode == 1
    assert done.stdout == "personas/pine.toml: OK (pine)\n"
    assert_one_line_error(done.stderr, str(broken), "system_prompt")


def test_persona_list_shows_name_display_name_and_adapter(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "persona", "list")

    assert code == 0
    assert out.split() == ["pine", "Pine", "personas/adapters/pine", "(personas/pine.toml)"]


def test_persona_list_of_another_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = workdir / "more"
    folder.mkdir()
    (folder / "fern.toml").write_text(
        'name = "fern"\ndisplay_name = "Fern"\nsystem_prompt = "x"\nadapter = "lora"\n',
        encoding="utf-8",
    )

    code, out, _ = cli(capsys, "persona", "list", "--dir", str(folder))

    assert code == 0
    assert out.split()[:3] == ["fern", "Fern", str(folder / "lora")]


def test_persona_list_of_an_empty_folder_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "empty").mkdir()

    code, out, _ = cli(capsys, "persona", "list", "--dir", "empty")

    assert code == 0
    assert out == "no personas in empty\n"


def test_adapters_list_shows_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "adapters", "list")

    assert code == 0
    assert ["terminal", "botkit.terminal:TerminalAdapter"] in [
        line.split() for line in out.splitlines()
    ]


# --- db ---------------------------------------------------------------------------------


def test_db_upgrade_then_current_prints_the_head_revision(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from botkit.memory import migrate

    head = migrate.head()

    code, out, err = cli(capsys, "db", "upgrade")
    assert code == 0, err
    assert out == f"database schema at revision {head} (head is {head})\n"

    code, out, err = cli(capsys, "db", "current")
    assert code == 0, err
    assert out == f"database schema at revision {head} (head is {head})\n"
    assert (workdir / "data" / "botkit.db").is_file()


def test_db_downgrade_prints_base(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "db", "upgrade")[0] == 0

    code, out, err = cli(capsys, "db", "downgrade")

    assert code == 0, err
    assert out.startswith("database schema at revision base (empty) (head is ")
    assert cli(capsys, "db", "current")[1].startswith("database schema at revision base (empty)")


def test_unreachable_postgres_names_the_host_and_never_the_password(workdir: Path) -> None:
    done = run_script(
        "db", "current", cwd=workdir,
        BOTKIT_MEMORY__URL="postgresql://bot@127.0.0.1:1/botkit",
        BOTKIT_DATABASE_PASSWORD="pw-s3cret",
    )

    assert done.returncode == 1
    assert_one_line_error(done.stderr, "127.0.0.1")
    assert "pw-s3cret" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "argv",
    [("memory", "export", "--user", "terminal:alice"), ("chat", "--once", "hi")],
    ids=["memory-export", "chat"],
)
def test_unreachable_postgres_fails_every_command_cleanly(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    generator: ScriptedGenerator,
    argv: tuple[str, ...],
) -> None:
    monkeypatch.setenv("BOTKIT_MEMORY__URL", "postgresql://bot@127.0.0.1:1/botkit")
    monkeypatch.setenv("BOTKIT_DATABASE_PASSWORD", "pw-s3cret")

    code, out, err = cli(capsys, *argv)

    assert code == 1
    assert out == ""
    assert_one_line_error(err, "127.0.0.1")
    assert "pw-s3cret" not in err


# --- chat -------------------------------------------------------------------------------


def test_chat_once_prints_only_the_reply(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
) -> None:
    code, out, err = cli(capsys, "chat", "--once", QUESTION)

    assert code == 0, err
    assert out == ANSWER + "\n"
    assert generator.requests[-1].messages[-1].content == QUESTION
    assert generator.closed


def test_installed_script_chat_once_with_an_unknown_persona_exits_1(workdir: Path) -> None:
    done = run_script("chat", "--once", "hi", "--persona", "fern", cwd=workdir)

    assert done.returncode == 1
    assert done.stdout == ""
    assert_one_line_error(done.stderr, "unknown persona 'fern'")


class RecordingStdout(io.StringIO):
    """Keeps each write, so a test can see a reply arrive in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_chat_interactive_greets_streams_replies_and_resets(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    generator: ScriptedGenerator,
    terminal_user: str,
    stdin: io.StringIO,
) -> None:
    generator.replies[:] = ["Hello! How can I help?", "Hi again, what do you need?"]
    stdin.write("hello\n/reset\nhi again\n/exit\n")
    stdin.seek(0)
    stdout = RecordingStdout()
    monkeypatch.setattr(sys, "stdout", stdout)

    code = main(["chat"])

    out = stdout.getvalue()
    greeting = "Pine> Hi, I'm Pine, the Harbor & Pine virtual assistant."
    expected_in_order = [
        "/reset starts over",
        greeting,
        "you> ",
        "Pine> Hello! How can I help?\n",
        "(new conversation)\n",
        greeting,
        "Pine> Hi again, what do you need?\n",
        "you> ",
    ]
    assert code == 0
    position = 0
    for text in expected_in_order:
        found = out.find(text, position)
        assert found >= 0, f"{text!r} missing after position {position} in:\n{out}"
        position = found + len(text)
    assert "Hello! How can I help?" not in stdout.writes  # streamed, not written at once
    assert "".join(stdout.writes) == out
    after_reset = [m.content for m in generator.requests[1].messages]
    assert "hello" not in after_reset
    assert after_reset[-1] == "hi again"


def test_chat_resume_shows_the_earlier_messages(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
    stdin: io.StringIO,
) -> None:
    assert cli(capsys, "chat", "--once", QUESTION)[0] == 0
    stdin.write("/exit\n")
    stdin.seek(0)

    code, out, err = cli(capsys, "chat", "--resume")

    assert code == 0, err
    assert "(resuming: 2 earlier messages)" in out
    assert f"you> {QUESTION}\nPine> {ANSWER}\n" in out


def test_chat_once_without_resume_starts_a_new_conversation(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
) -> None:
    generator.replies.append("Second answer.")
    assert cli(capsys, "chat", "--once", QUESTION)[0] == 0

    assert cli(capsys, "chat", "--once", "And shipping?")[0] == 0

    contents = [m.content for m in generator.requests[-1].messages]
    assert QUESTION not in contents


# --- memory -----------------------------------------------------------------------------


def test_memory_export_prints_the_users_messages_as_json(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
) -> None:
    assert cli(capsys, "chat", "--once", QUESTION)[0] == 0

    code, out, err = cli(capsys, "memory", "export", "--user", f"terminal:{terminal_user}")

    assert code == 0, err
    data = json.loads(out)
    assert data["user"]["external_id"] == terminal_user
    [conversation] = data["conversations"]
    assert [(m["role"], m["text"]) for m in conversation["messages"]] == [
        ("user", QUESTION),
        ("assistant", ANSWER),
    ]


def test_memory_export_to_a_file(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
) -> None:
    assert cli(capsys, "chat", "--once", QUESTION)[0] == 0
    target = workdir / "alice.json"

    code, out, err = cli(capsys, "memory", "export", "--user", "terminal:alice", "-o", str(target))

    assert code == 0
    assert out == ""
    assert err == f"wrote {target}\n"
    assert QUESTION in json.loads(target.read_text(encoding="utf-8"))["conversations"][0][
        "messages"
    ][0]["text"]


def test_memory_forget_deletes_and_a_later_export_fails(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
) -> None:
    assert cli(capsys, "chat", "--once", QUESTION)[0] == 0

    code, out, err = cli(capsys, "memory", "forget", "--user", "terminal:alice", "--yes")

    assert code == 0, err
    assert out.startswith("forgot terminal:alice: deleted ")
    assert "2 messages" in out
    assert "1 users" in out
    code, out, err = cli(capsys, "memory", "export", "--user", "terminal:alice")
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "no user 'alice'", "'terminal'")


def test_memory_forget_without_yes_and_without_a_tty_asks_for_yes(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    generator: ScriptedGenerator,
    terminal_user: str,
    stdin: io.StringIO,
) -> None:
    assert cli(capsys, "chat", "--once", QUESTION)[0] == 0

    code, out, err = cli(capsys, "memory", "forget", "--user", "terminal:alice")

    assert code == 1
    assert_one_line_error(err, "--yes")
    assert cli(capsys, "memory", "export", "--user", "terminal:alice")[0] == 0  # still there


@pytest.mark.parametrize("command", [("export",), ("forget", "--yes")], ids=lambda c: c[0])
def test_memory_user_without_a_colon_explains_channel_id(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    code, out, err = cli(capsys, "memory", *command, "--user", "nocolon")

    assert code == 1
    assert_one_line_error(err, "CHANNEL:ID", "'nocolon'")
    assert not (workdir / "data").exists()


def test_config_check_shows_the_database_password_only_as_set(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTKIT_MEMORY__URL", "postgresql://bot@127.0.0.1:5432/botkit")
    monkeypatch.setenv("BOTKIT_DATABASE_PASSWORD", "hunter2")

    code, out, err = cli(capsys, "config", "check")

    assert code == 0, err
    assert "set (BOTKIT_DATABASE_PASSWORD)" in out
    assert "hunter2" not in out + err
