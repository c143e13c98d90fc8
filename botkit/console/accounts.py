"""``botkit console add-user`` and ``botkit console passwd``: the console's accounts.

There is no default account and no default password: the first operator is made on the
command line. A password is asked twice on the terminal (never echoed), or read from
the first line of standard input with ``--password-stdin`` (for scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from botkit.console.auth import (
    PasswordError,
    check_new_password,
    check_username,
    hash_password,
)
from botkit.errors import BotkitError


def read_password(*, from_stdin: bool) -> str:
    """A new password: stdin's first line, or typed twice at the terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise PasswordError("no password on standard input (--password-stdin reads "
                                "its first line)")
        return check_new_password(password)
    if not sys.stdin.isatty():
        raise BotkitError("no terminal to ask for the password on; pipe it in with "
                          "--password-stdin")
    first = getpass.getpass("New password: ")
    check_new_password(first)
    if getpass.getpass("Repeat the password: ") != first:
        raise PasswordError("the two passwords differ; nothing was changed")
    return first


def add_arguments(add_user: argparse.ArgumentParser, passwd: argparse.ArgumentParser) -> None:
    add_user.add_argument("username", help="the login name (letters, digits, '.', '_', '-')")
    add_user.add_argument("--role", required=True, choices=["agent", "operator"],
                          help="agent: takes chats over from the bot; operator: also "
                          "browses every conversation, exports and forgets users")
    add_user.add_argument("--display-name", metavar="NAME",
                          help="the name users see on the team's messages (default: the "
                          "username)")
    add_user.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of standard input")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")


def run(args: argparse.Namespace, config: Any) -> int:
    username = check_username(args.username)
    display_name = getattr(args, "display_name", None)
    if display_name is not None:
        display_name = " ".join(display_name.split())[:255] or None
    password = read_password(from_stdin=args.password_stdin)
    password_hash = hash_password(password)
    if args.console_command == "add-user":
        record = asyncio.run(_add(config, username, args.role, password_hash, display_name))
        print(f"created the console {record.role} {record.username!r}"
              f"{f' ({record.display_name})' if record.display_name else ''}; "
              f"log in at http://{config.server.host}:{config.server.port}/console")
        return 0
    if not asyncio.run(_passwd(config, username, password_hash)):
        raise BotkitError(f"there is no console user {username!r} (botkit console add-user "
                          "makes one)")
    print(f"changed the password of {username!r}; their open sessions are logged out")
    return 0


async def _add(
    config: Any, username: str, role: str, password_hash: str, display_name: str | None
) -> Any:
    from botkit.app import open_store

    store = await open_store(config)
    try:
        return await store.add_console_user(
            username, role=role, password_hash=password_hash, display_name=display_name
        )
    finally:
        await store.close()


async def _passwd(config: Any, username: str, password_hash: str) -> bool:
    from botkit.app import open_store

    store = await open_store(config)
    try:
        return await store.set_console_password(username, password_hash)
    finally:
        await store.close()
