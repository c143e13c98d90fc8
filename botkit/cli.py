"""``botkit``: the command line.

Every command has ``--help``. Errors print one sentence to stderr and exit non-zero;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from botkit import __version__
from botkit.errors import BotkitError

log = logging.getLogger("botkit")

EXIT_ERROR = 1
EXIT_USAGE = 2


def _config(args: argparse.Namespace) -> Any:
    from botkit.config import load_config

    config = load_config(args.config)
    if not args.debug:
        logging.getLogger("botkit").setLevel(config.logging.level.upper())
    return config


# --- chat -----------------------------------------------------------------------------


async def _chat(args: argparse.Namespace) -> int:
    from botkit.app import load_personas, open_engine
    from botkit.terminal import TerminalAdapter

    config = _config(args)
    load_personas(config)[args.persona or config.bot.default_persona]  # before the model loads
    if args.once is None:
        print("Loading the model...", file=sys.stderr, flush=True)
    async with open_engine(config) as engine:
        terminal = TerminalAdapter(engine, config.adapters.get("terminal"), persona=args.persona)
        if args.once is not None:
            await terminal.once(args.once, resume=args.resume)
        else:
            await terminal.run(resume=args.resume)
    return 0


# --- serve ----------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> int:
    from botkit.app import load_personas, open_engine
    from botkit.server.run import ServerRunner, bind_socket, describe_start

    config = _config(args)
    _json_logs(config)
    turns = logging.getLogger("botkit.turns")  # one line per turn, text only at DEBUG
    if turns.getEffectiveLevel() > logging.INFO:
        turns.setLevel(logging.INFO)
    load_personas(config)  # a broken persona file fails before the model loads
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    try:
        sock = bind_socket(host, port)  # fail fast, before minutes of model loading
    except OSError as exc:
        raise BotkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print("Loading the model...", file=sys.stderr, flush=True)
    async with open_engine(config) as engine:
        runner = ServerRunner(engine, config, sock=sock)
        announce = asyncio.create_task(asyncio.to_thread(runner.ready.wait, 600))
        announce.add_done_callback(
            lambda task: print(describe_start(runner), flush=True) if task.result() else None
        )
        try:
            await runner.serve(handle_signals=True)
        finally:
            runner.ready.set()  # releases the waiting thread if the server never started
    print("botkit stopped", file=sys.stderr)
    return 0


def _json_logs(config: Any) -> None:
    """``[logging] format = "json"``: one JSON object per log line, for log collectors."""
    if config.logging.format != "json":
        return

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            entry: dict[str, Any] = {
                "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname, "logger": record.name,
            }
            turn = getattr(record, "turn", None)
            if isinstance(turn, dict):
                entry.update(turn)
            else:
                entry["message"] = record.getMessage()
            if record.exc_info:
                entry["exception"] = self.formatException(record.exc_info)
            return json.dumps(entry, ensure_ascii=False)

    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())


# --- config and personas ----------------------------------------------------------------


def _config_check(args: argparse.Namespace) -> int:
    from botkit.app import load_personas
    from botkit.config import describe

    config = _config(args)
    rows = describe(config)
    personas = load_personas(config)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(f"{'personas':<{width}}  {', '.join(sorted(personas))}")
    print("config OK")
    return 0


def _persona_list(args: argparse.Namespace) -> int:
    from botkit.personas import PersonaRegistry

    folder = args.dir or _config(args).bot.personas_dir
    personas = PersonaRegistry.from_dir(folder)
    if not personas:
        print(f"no personas in {folder}")
        return 0
    for persona in personas.values():
        adapter = str(persona.adapter) if persona.adapter else "base model"
        print(f"{persona.name:<16} {persona.display_name:<20} {adapter}  ({persona.path})")
    return 0


def _persona_validate(args: argparse.Namespace) -> int:
    from botkit.personas import PersonaRegistry, load_persona

    if args.files:
        for file in args.files:
            persona = load_persona(file)
            print(f"{file}: OK ({persona.name})")
        return 0
    folder = args.dir or _config(args).bot.personas_dir
    personas = PersonaRegistry.from_dir(folder)
    for persona in personas.values():
        print(f"{persona.path}: OK ({persona.name})")
    print(f"{len(personas)} persona(s) valid")
    return 0


async def _persona_export(args: argparse.Namespace) -> int:
    from botkit.app import open_store
    from botkit.persona_versions import export_versions

    config = _config(args)
    folder = Path(args.dir or config.bot.personas_dir)
    store = await open_store(config)
    try:
        latest = {r.persona: r for r in await store.latest_persona_versions()}
        written = await export_versions(store, folder, args.persona or None)
    finally:
        await store.close()
    if not written:
        print("no persona has been published from the console; nothing to export")
        return 0
    for path in written:
        record = latest[path.stem]
        print(f"{path}: version {record.version} by {record.author} "
              f"({record.created_at:%Y-%m-%d %H:%M} UTC)")
    return 0


async def _persona_history(args: argparse.Namespace) -> int:
    from botkit.app import open_store

    store = await open_store(_config(args))
    try:
        versions = await store.persona_versions(args.name)
    finally:
        await store.close()
    if not versions:
        print(f"{args.name}: no published versions (the file is the only one)")
    for record in versions:
        note = f": {record.comment}" if record.comment else ""
        print(f"version {record.version}  {record.created_at:%Y-%m-%d %H:%M} UTC  "
              f"{record.author}{note}")
    return 0


# --- database and memory ----------------------------------------------------------------


async def _db(args: argparse.Namespace) -> int:
    from botkit.memory import migrate

    config = _config(args)
    url, password = config.database_url, config.secret("database_password")
    if args.db_command == "upgrade":
        await migrate.upgrade(url, args.revision, password=password)
    elif args.db_command == "downgrade":
        await migrate.downgrade(url, args.revision, password=password)
    revision = await migrate.current(url, password=password)
    print(f"database schema at revision {revision or 'base (empty)'} (head is {migrate.head()})")
    return 0


def _user_ref(text: str) -> tuple[str, str]:
    channel, sep, external_id = text.partition(":")
    if not sep or not channel or not external_id:
        raise BotkitError(
            f"--user {text!r} must be CHANNEL:ID, e.g. terminal:alice or telegram:123456"
        )
    return channel, external_id


def _memory(args: argparse.Namespace) -> int:
    channel, external_id = _user_ref(args.user)
    config = _config(args)
    if args.memory_command == "forget" and not args.yes:
        if not sys.stdin.isatty():
            raise BotkitError("forgetting a user deletes their data for good; add --yes")
        answer = input(f"Delete everything stored about {args.user}? Type yes: ")
        if answer.strip().lower() != "yes":
            print("nothing deleted")
            return EXIT_ERROR
    result = asyncio.run(_memory_run(config, args.memory_command, channel, external_id))
    if args.memory_command == "forget":
        summary = ", ".join(f"{n} {table}" for table, n in result.items())
        print(f"forgot {args.user}: deleted {summary}")
        return 0
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


async def _memory_run(config: Any, command: str, channel: str, external_id: str) -> Any:
    from botkit.app import open_store

    store = await open_store(config)
    try:
        if command == "export":
            return await store.export_user(channel, external_id)
        return await store.forget_user(channel, external_id)
    finally:
        await store.close()


def _adapters_list(args: argparse.Namespace) -> int:
    from botkit.adapters import available_adapters
    from botkit.training.cli import print_lora_adapters

    print_lora_adapters(_config(args), [Path(d) for d in args.dir])
    print()
    print("channel adapters:")
    for name, entry in sorted(available_adapters().items()):
        print(f"  {name:<12} {entry.value}")
    return 0


def _console(args: argparse.Namespace) -> int:
    from botkit.console.accounts import run

    return run(args, _config(args))


# --- training ---------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from botkit.training.cli import run_train

    return run_train(args, _config(args))


def _eval(args: argparse.Namespace) -> int:
    from botkit.training.cli import run_eval

    return run_eval(args, _config(args))


def _data_export(args: argparse.Namespace) -> int:
    from botkit.training.cli import run_data_export

    return run_data_export(args, _config(args))


def _lora_merge(args: argparse.Namespace) -> int:
    from botkit.training.cli import run_merge

    return run_merge(args, _config(args))


def _bench_train(args: argparse.Namespace) -> int:
    from botkit.bench.train import run

    return run(args)


def _bench_web(args: argparse.Namespace) -> int:
    from botkit.bench.web import run

    return run(args)


def _bench_serve(args: argparse.Namespace) -> int:
    from botkit.bench.serve import run

    return run(args)


# --- the parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="botkit",
        description="botkit: chat bots whose brain is a LoRA-fine-tuned language model.",
    )
    parser.add_argument("--version", action="version", version=f"botkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(parent: Any, name: str, help_text: str, handler: Callable[..., Any]) -> Any:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--config", metavar="FILE",
            help="config TOML file (default: $BOTKIT_CONFIG, else built-in defaults)",
        )
        return sub

    chat = with_config(add(commands, "chat", "chat with a persona in the terminal", _chat))
    chat.add_argument("--persona", metavar="NAME", help="persona to talk to (default from config)")
    chat.add_argument("--once", metavar="TEXT", help="print one reply to TEXT and exit")
    chat.add_argument(
        "--resume", action="store_true", help="continue the last conversation instead of a new one"
    )

    serve = with_config(add(
        commands, "serve", "serve the web widget, the OpenAI-compatible API, health and "
        "metrics over HTTP, with every adapter of [server] adapters", _serve))
    serve.add_argument("--host", help="address to listen on (default: [server] host, "
                       "127.0.0.1); beyond loopback the API needs BOTKIT_API_KEYS")
    serve.add_argument("--port", type=int, help="port (default: [server] port, 8000)")

    config = commands.add_parser("config", help="check a config file", description="config files")
    config_commands = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    with_config(add(config_commands, "check", "validate a config and print what would run",
                    _config_check))

    persona = commands.add_parser("persona", help="list or validate personas",
                                  description="persona files")
    persona_commands = persona.add_subparsers(dest="persona_command", metavar="COMMAND",
                                              required=True)
    plist = with_config(add(persona_commands, "list", "list the personas of a folder",
                            _persona_list))
    plist.add_argument("--dir", help="personas folder (default: [bot] personas_dir)")
    pval = with_config(add(persona_commands, "validate",
                           "validate persona files (default: every file of the folder)",
                           _persona_validate))
    pval.add_argument("files", nargs="*", help="persona files to check")
    pval.add_argument("--dir", help="personas folder (default: [bot] personas_dir)")
    pexport = with_config(add(persona_commands, "export",
                              "write the newest persona versions published from the console "
                              "back to TOML files", _persona_export))
    pexport.add_argument("--dir", help="where to write (default: [bot] personas_dir)")
    pexport.add_argument("--persona", action="append", metavar="NAME",
                         help="only this persona (repeatable)")
    phistory = with_config(add(persona_commands, "history",
                               "list a persona's published versions: when, who, why",
                               _persona_history))
    phistory.add_argument("name", metavar="NAME")

    db = commands.add_parser("db", help="migrate the conversation database",
                             description="Alembic migrations of the conversation database")
    db_commands = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    up = with_config(add(db_commands, "upgrade", "upgrade the schema (default: to head)", _db))
    up.add_argument("revision", nargs="?", default="head")
    down = with_config(add(db_commands, "downgrade",
                           "downgrade the schema (default: to base, dropping every table)", _db))
    down.add_argument("revision", nargs="?", default="base")
    with_config(add(db_commands, "current", "print the schema revision", _db))

    memory = commands.add_parser("memory", help="export or forget a user's data",
                                 description="what botkit remembers about a user")
    memory_commands = memory.add_subparsers(dest="memory_command", metavar="COMMAND",
                                            required=True)
    export = with_config(add(memory_commands, "export",
                             "print everything stored about a user as JSON", _memory))
    export.add_argument("--user", required=True, metavar="CHANNEL:ID")
    export.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    forget = with_config(add(memory_commands, "forget",
                             "delete everything stored about a user, in every table", _memory))
    forget.add_argument("--user", required=True, metavar="CHANNEL:ID")
    forget.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    adapters = commands.add_parser("adapters", help="LoRA adapters and channel adapters",
                                   description="LoRA adapters (the model's fine-tunings) and "
                                   "channel adapters (Telegram, Discord, ...)")
    adapter_commands = adapters.add_subparsers(dest="adapters_command", metavar="COMMAND",
                                               required=True)
    alist = with_config(add(adapter_commands, "list",
                            "list the LoRA adapters (personas' and under data/adapters) and "
                            "the installed channel adapters", _adapters_list))
    alist.add_argument("--dir", action="append", default=[], metavar="DIR",
                       help="also look for LoRA adapters under DIR (repeatable)")
    merge = with_config(add(adapter_commands, "merge",
                            "merge a LoRA adapter into its base model, written as a full model "
                            "directory that any transformers tool loads", _lora_merge))
    merge.add_argument("adapter", metavar="ADAPTER_DIR", help="the adapter directory")
    merge.add_argument("--output", "-o", required=True, metavar="DIR",
                       help="where to write the merged model (must not exist)")
    merge.add_argument("--base", metavar="SOURCE",
                       help="base model (default: the manifest's base_source, else [model] source)")

    console = commands.add_parser(
        "console", help="accounts of the web console (/console)",
        description="accounts of the web console at /console, for support agents and "
        "operators",
    )
    console_commands = console.add_subparsers(dest="console_command", metavar="COMMAND",
                                              required=True)
    from botkit.console.accounts import add_arguments as add_console_arguments  # light

    add_console_arguments(
        with_config(add(console_commands, "add-user",
                        "create a console account (the password is asked twice, or read "
                        "from stdin with --password-stdin)", _console)),
        with_config(add(console_commands, "passwd",
                        "set a console account's password (its open sessions end)", _console)),
    )

    from botkit.training.cli import add_data_arguments, add_eval_arguments, add_train_arguments

    add_train_arguments(with_config(add(
        commands, "train", "fine-tune a LoRA adapter on chat dialogues (JSONL)", _train)))
    add_eval_arguments(with_config(add(
        commands, "eval", "ask a persona a question file and report its accuracy, "
        "base model vs adapter", _eval)))
    data = commands.add_parser("data", help="training data from the conversation memory",
                               description="training data")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    add_data_arguments(with_config(add(
        data_commands, "export", "export dialogues for training as JSONL: conversations with "
        "positive feedback (and, optionally, human agents' replies); opted-out users are "
        "never exported", _data_export)))

    from botkit.bench.serve import add_arguments as add_serve_arguments  # stdlib only

    bench = commands.add_parser("bench", help="benchmarks", description="benchmarks")
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    add_serve_arguments(add(bench_commands, "serve",
                            "serving throughput and latency, botkit vs transformers",
                            _bench_serve))
    from botkit.bench.web import add_arguments as add_web_bench_arguments  # stdlib only

    add_web_bench_arguments(add(bench_commands, "web",
                                "the web widget under load: N concurrent users over HTTP and "
                                "SSE vs the engine called directly", _bench_web))
    from botkit.bench.train import add_arguments as add_train_bench_arguments  # stdlib only

    add_train_bench_arguments(add(bench_commands, "train",
                                  "training throughput, botkit's loop vs a plain padded loop",
                                  _bench_train))
    return parser


def _setup_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if not debug:
        # transformers and friends are chatty at start-up; their warnings are not the user's.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # A bar per weight file on every start is noise; botkit says what it loads.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.debug)
    try:
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BotkitError as exc:
        if args.debug:
            raise
        print(f"botkit: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if args.debug:
            raise
        print(
            f"botkit: unexpected error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
